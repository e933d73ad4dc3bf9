# Remove-VmPath.ps1 - compensation: removes a file or folder strictly below the host's VM folder root (VirtualMachinePath) or strictly inside a Cluster Shared Volume (storage class folders), never one a VM still uses (a disk, or an ISO in a DVD drive).
#
# Request (stdin, JSON): {"path":"<file or folder>"}
# Result data: {path, removed}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $path = [string](Get-AethervRequiredField -Request $Request -Name 'path')
    $root = [string](Hyper-V\Get-VMHost).VirtualMachinePath
    if (-not (Test-AethervRemovablePath -Path $path -VmRoot $root)) {
        Stop-Aetherv -Code 'PathOutsideRoot' -Message ($path + ' is neither below the VM folder root ' + $root + ' nor inside a Cluster Shared Volume') -Details @{ path = $path; root = $root }
    }
    $vms = @(Hyper-V\Get-VM)
    if ($vms.Count -gt 0) {
        foreach ($disk in @(Hyper-V\Get-VMHardDiskDrive -VM $vms)) {
            $diskPath = [string]$disk.Path
            if ($diskPath.Length -gt 0 -and ($diskPath -eq $path -or (Test-AethervPathUnder -Path $diskPath -Root $path))) {
                Stop-Aetherv -Code 'PathInUse' -Message ($path + ' holds disk ' + $diskPath + ' of VM ' + $disk.VMName) -Details @{ path = $path; vm = $disk.VMId.ToString() }
            }
        }
    }
    if ($vms.Count -gt 0) {
        foreach ($dvd in @(Hyper-V\Get-VMDvdDrive -VM $vms)) {
            $dvdPath = [string]$dvd.Path
            if ($dvdPath.Length -gt 0 -and ($dvdPath -eq $path -or (Test-AethervPathUnder -Path $dvdPath -Root $path))) {
                Stop-Aetherv -Code 'PathInUse' -Message ($path + ' holds ISO ' + $dvdPath + ' inserted in a DVD drive of VM ' + $dvd.VMName + '; eject it first') -Details @{ path = $path; vm = $dvd.VMId.ToString() }
            }
        }
    }
    $removed = $false
    if (Test-Path -LiteralPath $path) {
        Remove-Item -LiteralPath $path -Recurse -Force
        $removed = $true
    }
    [ordered]@{ path = $path; removed = $removed }
}
