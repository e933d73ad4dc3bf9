# Remove-ManagedVm.ps1 - deletes an Off VM, with or without its disks; refuses shared disks and clustered VMs.
#
# Request (stdin, JSON): {"id":"<guid>","delete_disks":true|false}
# Result data: {id, name, removed_paths[], kept_paths[]}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $deleteDisks = [bool](Get-AethervField -Request $Request -Name 'delete_disks' -Default $false)
    if ([int]$vm.State -ne 3) {
        Stop-Aetherv -Code 'InvalidVmState' -Message ('VM ' + $vm.Name + ' is ' + $vm.State.ToString() + '; turn it off before deleting it') -Details (Get-AethervStateDetails -Vm $vm)
    }
    if ($vm.IsClustered) {
        Stop-Aetherv -Code 'VmClustered' -Message ('VM ' + $vm.Name + ' is a cluster role; remove the role first') -Details @{ vm = $vm.Id.ToString() }
    }
    $disks = @(Hyper-V\Get-VMHardDiskDrive -VM $vm)
    $paths = @($disks | Where-Object { -not [string]::IsNullOrEmpty($_.Path) } | ForEach-Object { [string]$_.Path })
    if ($deleteDisks -and $paths.Count -gt 0) {
        $others = @(Hyper-V\Get-VM | Where-Object { $_.Id -ne $vm.Id })
        $otherPaths = @{}
        if ($others.Count -gt 0) {
            foreach ($d in @(Hyper-V\Get-VMHardDiskDrive -VM $others)) {
                if (-not [string]::IsNullOrEmpty($d.Path)) { $otherPaths[([string]$d.Path).ToLowerInvariant()] = $true }
            }
        }
        foreach ($d in $disks) {
            $path = [string]$d.Path
            if ([string]::IsNullOrEmpty($path)) { continue }
            $shared = $d.SupportPersistentReservations -or $path.EndsWith('.vhds', [StringComparison]::OrdinalIgnoreCase) -or $otherPaths.ContainsKey($path.ToLowerInvariant())
            if ($shared) {
                Stop-Aetherv -Code 'SharedDisk' -Message ('disk ' + $path + ' of VM ' + $vm.Name + ' is shared') -Details @{ vm = $vm.Id.ToString(); path = $path }
            }
        }
    }
    Hyper-V\Remove-VM -VM $vm -Force
    $removed = @()
    $kept = @()
    foreach ($path in $paths) {
        if ($deleteDisks) {
            if (Test-Path -LiteralPath $path -PathType Leaf) { Remove-Item -LiteralPath $path -Force }
            $removed += $path
        } else {
            $kept += $path
        }
    }
    [ordered]@{ id = $vm.Id.ToString(); name = [string]$vm.Name; removed_paths = @($removed); kept_paths = @($kept) }
}
