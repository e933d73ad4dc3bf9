# Add-ManagedVmDisk.ps1 - attaches a disk file to the first free location of the VM's SCSI controllers (hot-add works while the VM runs).
#
# Request (stdin, JSON): {"id":"<guid>","path":"<absolute .vhdx/.vhd path>"}
# Fails with NoFreeScsiSlot when every location (64 per controller) is taken, and with
# InvalidRequest when the file is missing or another VM uses it.
# Result data: {id, disk:{path, controller_type, controller_number, controller_location, disk_type, max_size_bytes, file_size_bytes, shared}}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $path = [string](Get-AethervRequiredField -Request $Request -Name 'path')
    if (-not (Test-Path -LiteralPath $path -PathType Leaf)) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('no disk file ' + $path) -Details @{ field = 'path' }
    }
    foreach ($d in @(Hyper-V\Get-VMHardDiskDrive -VM @(Hyper-V\Get-VM))) {
        if (([string]$d.Path).Equals($path, [StringComparison]::OrdinalIgnoreCase)) {
            Stop-Aetherv -Code 'InvalidRequest' -Message ('disk ' + $path + ' is already attached to VM ' + [string]$d.VMName) -Details @{ field = 'path' }
        }
    }
    $taken = @{}
    foreach ($d in @(Hyper-V\Get-VMHardDiskDrive -VM $vm -ControllerType SCSI)) { $taken[([string]$d.ControllerNumber) + ':' + ([string]$d.ControllerLocation)] = $true }
    foreach ($d in @(Hyper-V\Get-VMDvdDrive -VM $vm)) {
        if ($d.ControllerType.ToString() -eq 'SCSI') { $taken[([string]$d.ControllerNumber) + ':' + ([string]$d.ControllerLocation)] = $true }
    }
    $slot = $null
    foreach ($controller in @(Hyper-V\Get-VMScsiController -VM $vm | Sort-Object -Property ControllerNumber)) {
        for ($location = 0; $location -lt 64; $location++) {
            if (-not $taken.ContainsKey(([string]$controller.ControllerNumber) + ':' + ([string]$location))) {
                $slot = @{ number = [int]$controller.ControllerNumber; location = $location }
                break
            }
        }
        if ($null -ne $slot) { break }
    }
    if ($null -eq $slot) {
        Stop-Aetherv -Code 'NoFreeScsiSlot' -Message ('VM ' + $vm.Name + ' has no free SCSI location') -Details @{ vm = $vm.Id.ToString() }
    }
    Hyper-V\Add-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber $slot.number -ControllerLocation $slot.location -Path $path
    $shape = @(Get-AethervVmShapes -Vms @(Hyper-V\Get-VM -Id $vm.Id))[0]
    $disk = @($shape.disks | Where-Object { $_.controller_type -eq 'SCSI' -and $_.controller_number -eq $slot.number -and $_.controller_location -eq $slot.location })[0]
    [ordered]@{ id = $vm.Id.ToString(); disk = $disk }
}
