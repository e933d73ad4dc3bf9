# Remove-ManagedVmDisk.ps1 - detaches a VM's disk (Remove-VMHardDiskDrive), optionally deleting its file; never a shared disk.
#
# Request (stdin, JSON): {"id":"<guid>","controller_type":"SCSI|IDE","controller_number":n,"controller_location":n,"delete_file":true|false}
# Refuses (SharedDisk) a shared VHDX or VHD Set, (InvalidVmState) an IDE disk of a VM that is
# not Off. The file is deleted only when no other VM uses it.
# Result data: {id, path, deleted}
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
    $deleteFile = [bool](Get-AethervField -Request $Request -Name 'delete_file' -Default $false)
    $drive = @(Hyper-V\Get-VMHardDiskDrive -VM $vm | Where-Object { $_.ControllerType.ToString() -eq $type -and [int]$_.ControllerNumber -eq $number -and [int]$_.ControllerLocation -eq $location })
    if ($drive.Count -eq 0) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('VM ' + $vm.Name + ' has no disk at ' + $type + ' ' + $number + ':' + $location) -Details @{ field = 'disk' }
    }
    $d = $drive[0]
    $path = [string]$d.Path
    $shared = ($null -ne $d.PSObject.Properties['SupportPersistentReservations'] -and $d.SupportPersistentReservations) -or $path.EndsWith('.vhds', [StringComparison]::OrdinalIgnoreCase)
    if ($shared) {
        Stop-Aetherv -Code 'SharedDisk' -Message ('disk ' + $path + ' of VM ' + $vm.Name + ' is shared') -Details @{ vm = $vm.Id.ToString(); path = $path }
    }
    if ($type -eq 'IDE' -and [int]$vm.State -ne 3) {
        Stop-Aetherv -Code 'InvalidVmState' -Message ('disk ' + $path + ' of VM ' + $vm.Name + ' is on IDE: it can only be detached while the VM is Off') -Details (Get-AethervStateDetails -Vm $vm)
    }
    Hyper-V\Remove-VMHardDiskDrive -VMHardDiskDrive $d
    $deleted = $false
    if ($deleteFile -and -not [string]::IsNullOrEmpty($path)) {
        $users = @(Hyper-V\Get-VMHardDiskDrive -VM @(Hyper-V\Get-VM) | Where-Object { ([string]$_.Path).Equals($path, [StringComparison]::OrdinalIgnoreCase) })
        if ($users.Count -eq 0 -and (Test-Path -LiteralPath $path -PathType Leaf)) {
            Remove-Item -LiteralPath $path -Force
            $deleted = $true
        }
    }
    [ordered]@{ id = $vm.Id.ToString(); path = $path; deleted = $deleted }
}
