# Copy-GoldenImage.ps1 - Provisioning.CopyImage: copies a golden VHDX into a new VM folder and expands it to the requested size.
#
# Request (stdin, JSON): {"image_path":"<vhdx>","vm_name":"<name>","destination_root":"<folder>"|null (default: VirtualMachinePath),"disk_size_bytes":<n>|null (default: the image's size)}
# Result data: {vm_folder, vhdx_path, size_bytes, max_size_bytes}
# A disk_size_bytes below the image's virtual size fails with DiskTooSmall before anything is copied; a failed expansion removes the new folder again.
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $imagePath = [string](Get-AethervRequiredField -Request $Request -Name 'image_path')
    $vmName = [string](Get-AethervRequiredField -Request $Request -Name 'vm_name')
    $diskSize = Get-AethervField -Request $Request -Name 'disk_size_bytes'
    if ($vmName.IndexOfAny([System.IO.Path]::GetInvalidFileNameChars()) -ge 0) {
        Stop-Aetherv -Code 'InvalidRequest' -Message 'the VM name contains characters not allowed in a folder name' -Details @{ field = 'vm_name' }
    }
    if (-not (Test-Path -LiteralPath $imagePath -PathType Leaf)) {
        Stop-Aetherv -Code 'ImageNotFound' -Message ('no golden image at ' + $imagePath) -Details @{ image = $imagePath }
    }
    if ($null -ne (Get-AethervVmByName -Name $vmName)) {
        Stop-Aetherv -Code 'VmExists' -Message ('a VM named ' + $vmName + ' already exists') -Details @{ name = $vmName }
    }
    $imageVirtual = [int64](Hyper-V\Get-VHD -Path $imagePath).Size
    if ($null -ne $diskSize -and [int64]$diskSize -lt $imageVirtual) {
        Stop-Aetherv -Code 'DiskTooSmall' -Message ('the requested disk size of ' + [string]$diskSize + ' bytes is smaller than the virtual size of the image ' + $imagePath + ' (' + [string]$imageVirtual + ' bytes); disks are only expanded') -Details @{ image = $imagePath; requested_bytes = [int64]$diskSize; image_bytes = $imageVirtual }
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
    $virtualSize = $imageVirtual
    try {
        [System.IO.File]::Copy($imagePath, $target, $false)
        if ($null -ne $diskSize -and [int64]$diskSize -gt $imageVirtual) {
            # Offline expansion, before the VM exists; the guest grows its partition on first boot.
            Hyper-V\Resize-VHD -Path $target -SizeBytes ([uint64]$diskSize)
            $virtualSize = [int64](Hyper-V\Get-VHD -Path $target).Size
        }
    } catch {
        $failure = $_
        try { Remove-Item -LiteralPath $folder -Recurse -Force } catch { Write-Warning ('could not remove the new VM folder: ' + $_.Exception.Message) }
        throw $failure
    }
    [ordered]@{ vm_folder = $folder; vhdx_path = $target; size_bytes = [int64](Get-Item -LiteralPath $target).Length; max_size_bytes = $virtualSize }
}
