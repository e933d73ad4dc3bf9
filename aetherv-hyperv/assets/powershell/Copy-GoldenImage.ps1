# Copy-GoldenImage.ps1 - Provisioning.CopyImage: copies a golden VHDX into a new VM folder.
#
# Request (stdin, JSON): {"image_path":"<vhdx>","vm_name":"<name>","destination_root":"<folder>"|null (default: VirtualMachinePath)}
# Result data: {vm_folder, vhdx_path, size_bytes}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $imagePath = [string](Get-AethervRequiredField -Request $Request -Name 'image_path')
    $vmName = [string](Get-AethervRequiredField -Request $Request -Name 'vm_name')
    if ($vmName.IndexOfAny([System.IO.Path]::GetInvalidFileNameChars()) -ge 0) {
        Stop-Aetherv -Code 'InvalidRequest' -Message 'the VM name contains characters not allowed in a folder name' -Details @{ field = 'vm_name' }
    }
    if (-not (Test-Path -LiteralPath $imagePath -PathType Leaf)) {
        Stop-Aetherv -Code 'ImageNotFound' -Message ('no golden image at ' + $imagePath) -Details @{ image = $imagePath }
    }
    if ($null -ne (Get-AethervVmByName -Name $vmName)) {
        Stop-Aetherv -Code 'VmExists' -Message ('a VM named ' + $vmName + ' already exists') -Details @{ name = $vmName }
    }
    $root = [string](Get-AethervField -Request $Request -Name 'destination_root' -Default ([string](Hyper-V\Get-VMHost).VirtualMachinePath))
    $folder = Join-Path -Path $root -ChildPath $vmName
    if (Test-Path -LiteralPath $folder) {
        Stop-Aetherv -Code 'PathExists' -Message ('the VM folder ' + $folder + ' already exists; remove the leftover or pick another name') -Details @{ path = $folder }
    }
    $size = [int64](Get-Item -LiteralPath $imagePath).Length
    Assert-AethervFreeSpace -Path $folder -Required $size
    $diskFolder = Join-Path -Path $folder -ChildPath 'Virtual Hard Disks'
    [void][System.IO.Directory]::CreateDirectory($diskFolder)
    $target = Join-Path -Path $diskFolder -ChildPath ($vmName + '.vhdx')
    [System.IO.File]::Copy($imagePath, $target, $false)
    [ordered]@{ vm_folder = $folder; vhdx_path = $target; size_bytes = [int64](Get-Item -LiteralPath $target).Length }
}
