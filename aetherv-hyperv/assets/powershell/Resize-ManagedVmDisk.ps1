# Resize-ManagedVmDisk.ps1 - grows a VM's virtual disk (Resize-VHD); never shrinks it.
#
# Request (stdin, JSON): {"id":"<guid>","controller_type":"SCSI|IDE","controller_number":n,"controller_location":n,"size_bytes":<bytes>}
# Refuses (InvalidRequest) a size below the current one; (InvalidVmState) an IDE disk or a VHD
# of a VM that is not Off (online resize needs a VHDX on SCSI).
# Result data: {id, disk:{...}} as Add-ManagedVmDisk.
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $type = [string](Get-AethervRequiredField -Request $Request -Name 'controller_type')
    $number = [int](Get-AethervRequiredField -Request $Request -Name 'controller_number')
    $location = [int](Get-AethervRequiredField -Request $Request -Name 'controller_location')
    $size = [int64](Get-AethervRequiredField -Request $Request -Name 'size_bytes')
    $drive = @(Hyper-V\Get-VMHardDiskDrive -VM $vm | Where-Object { $_.ControllerType.ToString() -eq $type -and [int]$_.ControllerNumber -eq $number -and [int]$_.ControllerLocation -eq $location })
    if ($drive.Count -eq 0) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('VM ' + $vm.Name + ' has no disk at ' + $type + ' ' + $number + ':' + $location) -Details @{ field = 'disk' }
    }
    $path = [string]$drive[0].Path
    $vhd = Hyper-V\Get-VHD -Path $path
    if ($size -lt [int64]$vhd.Size) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('disk ' + $path + ' is ' + [string]$vhd.Size + ' bytes; it cannot shrink to ' + [string]$size) -Details @{ field = 'size_bytes' }
    }
    if ([int]$vm.State -ne 3 -and ($type -ne 'SCSI' -or -not $path.EndsWith('.vhdx', [StringComparison]::OrdinalIgnoreCase))) {
        Stop-Aetherv -Code 'InvalidVmState' -Message ('disk ' + $path + ' of VM ' + $vm.Name + ' can only be resized while the VM is Off (online resize needs a VHDX on SCSI)') -Details (Get-AethervStateDetails -Vm $vm)
    }
    if ($size -gt [int64]$vhd.Size) {
        Hyper-V\Resize-VHD -Path $path -SizeBytes $size
    }
    $shape = @(Get-AethervVmShapes -Vms @(Hyper-V\Get-VM -Id $vm.Id))[0]
    $disk = @($shape.disks | Where-Object { $_.controller_type -eq $type -and $_.controller_number -eq $number -and $_.controller_location -eq $location })[0]
    [ordered]@{ id = $vm.Id.ToString(); disk = $disk }
}
