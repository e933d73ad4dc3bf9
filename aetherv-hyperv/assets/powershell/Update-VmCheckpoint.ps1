# Update-VmCheckpoint.ps1 - create, apply, rename or remove one checkpoint of a VM.
#
# Request (stdin, JSON): {"id":"<vm guid>","action":"create","name":"..."}
#   | {"id","action":"apply","checkpoint":"<guid>","turn_off":false}
#   | {"id","action":"rename","checkpoint":"<guid>","name":"..."}
#   | {"id","action":"remove","checkpoint":"<guid>","subtree":false}
# Result data: {id, checkpoint:<checkpoint shape>|null, removed:[guid...], state, merging}
# Hyper-V's rules: a checkpoint applies only to a VM that is Off or Saved (with turn_off the
# VM is turned off first); removing a checkpoint starts a merge of the differencing disks that
# Hyper-V runs in the background (Get-Inventory's merge_percent follows it).
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

function Get-AethervCheckpoint {
    # The VM's checkpoint with this id; fails with CheckpointNotFound.
    param($Vm, $Id)
    $guid = [Guid]::Empty
    if (-not [Guid]::TryParse([string]$Id, [ref]$guid)) {
        Stop-Aetherv -Code 'InvalidRequest' -Message 'the checkpoint id is not a GUID' -Details @{ field = 'checkpoint' }
    }
    foreach ($snapshot in @(Hyper-V\Get-VMSnapshot -VM $Vm)) {
        if ($snapshot.Id -eq $guid) { return $snapshot }
    }
    Stop-Aetherv -Code 'CheckpointNotFound' -Message ('VM ' + $Vm.Name + ' has no checkpoint ' + $guid.ToString()) -Details @{ vm = $Vm.Id.ToString(); checkpoint = $guid.ToString() }
}

function Get-AethervDescendantIds {
    # The ids of every checkpoint below $Root among $All.
    param($Root, [object[]]$All)
    $found = New-Object -TypeName System.Collections.ArrayList
    $frontier = @($Root.Id)
    while ($frontier.Count -gt 0) {
        $next = @()
        foreach ($snapshot in $All) {
            if ($null -ne $snapshot.ParentSnapshotId -and $frontier -contains $snapshot.ParentSnapshotId) {
                [void]$found.Add($snapshot.Id.ToString())
                $next += $snapshot.Id
            }
        }
        $frontier = $next
    }
    return ,$found.ToArray()
}

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $action = [string](Get-AethervRequiredField -Request $Request -Name 'action')
    $checkpoint = $null
    $removed = @()
    if ($action -eq 'create') {
        $name = [string](Get-AethervRequiredField -Request $Request -Name 'name')
        $checkpoint = Hyper-V\Checkpoint-VM -VM $vm -SnapshotName $name -Passthru
    } elseif ($action -eq 'apply') {
        $snapshot = Get-AethervCheckpoint -Vm $vm -Id (Get-AethervRequiredField -Request $Request -Name 'checkpoint')
        $state = $vm.State.ToString()
        if ($state -ne 'Off' -and $state -ne 'Saved') {
            if ([bool](Get-AethervField -Request $Request -Name 'turn_off' -Default $false)) {
                Hyper-V\Stop-VM -VM $vm -TurnOff -Force
            } else {
                Stop-Aetherv -Code 'InvalidVmState' -Message ('a checkpoint applies only to a VM that is Off or Saved; VM ' + $vm.Name + ' is ' + $state) -Details (Get-AethervStateDetails -Vm $vm)
            }
        }
        Hyper-V\Restore-VMSnapshot -VMSnapshot $snapshot -Confirm:$false
        $checkpoint = $snapshot
    } elseif ($action -eq 'rename') {
        $snapshot = Get-AethervCheckpoint -Vm $vm -Id (Get-AethervRequiredField -Request $Request -Name 'checkpoint')
        $name = [string](Get-AethervRequiredField -Request $Request -Name 'name')
        $checkpoint = Hyper-V\Rename-VMSnapshot -VMSnapshot $snapshot -NewName $name -Passthru
    } elseif ($action -eq 'remove') {
        $snapshot = Get-AethervCheckpoint -Vm $vm -Id (Get-AethervRequiredField -Request $Request -Name 'checkpoint')
        $removed = @($snapshot.Id.ToString())
        if ([bool](Get-AethervField -Request $Request -Name 'subtree' -Default $false)) {
            $removed += Get-AethervDescendantIds -Root $snapshot -All @(Hyper-V\Get-VMSnapshot -VM $vm)
            Hyper-V\Remove-VMSnapshot -VMSnapshot $snapshot -IncludeAllChildSnapshots -Confirm:$false
        } else {
            Hyper-V\Remove-VMSnapshot -VMSnapshot $snapshot -Confirm:$false
        }
    } else {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('unknown action ' + $action + '; create, apply, rename or remove') -Details @{ field = 'action' }
    }
    $after = Get-AethervVm -Id $vm.Id
    $shape = $null
    if ($null -ne $checkpoint) { $shape = ConvertTo-AethervCheckpointShape -Snapshot $checkpoint }
    [ordered]@{
        id         = $after.Id.ToString()
        checkpoint = $shape
        removed    = @($removed)
        state      = [int]$after.State
        merging    = ($null -ne (Get-AethervMergePercent -Vm $after))
    }
}
