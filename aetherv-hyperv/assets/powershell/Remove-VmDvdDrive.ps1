# Remove-VmDvdDrive.ps1 - cleanup after provisioning: ejects the ISO at 'path' from the VM's DVD drives, then removes those drives.
#
# Request (stdin, JSON): {"id":"<guid>","path":"<iso path>"}
# Result data: {id, path, ejected, removed, kept:[reasons]}
# A generation 1 VM's DVD drive sits on an IDE controller, which Hyper-V cannot change while
# the VM runs: such a drive is only ejected and reported in 'kept'. A generation 2 VM's SCSI
# DVD drive is removed while the VM runs. The ISO file is free once no drive holds it.
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $path = [string](Get-AethervRequiredField -Request $Request -Name 'path')
    $drives = @(Hyper-V\Get-VMDvdDrive -VM $vm | Where-Object { -not [string]::IsNullOrEmpty([string]$_.Path) -and ([string]$_.Path).Equals($path, [StringComparison]::OrdinalIgnoreCase) })
    $ejected = 0
    $removed = 0
    $kept = @()
    foreach ($drive in $drives) {
        Hyper-V\Set-VMDvdDrive -VMDvdDrive $drive -Path $null
        $ejected += 1
        $ide = ([string]$drive.ControllerType) -eq 'IDE'
        if ($ide -and [int]$vm.State -ne 3) {
            $kept += ('IDE drive ' + $drive.ControllerNumber + ':' + $drive.ControllerLocation + ' of a generation 1 VM cannot be removed while the VM runs; it was ejected and left empty')
            continue
        }
        Hyper-V\Remove-VMDvdDrive -VMDvdDrive $drive
        $removed += 1
    }
    [ordered]@{ id = $vm.Id.ToString(); path = $path; ejected = $ejected; removed = $removed; kept = @($kept) }
}
