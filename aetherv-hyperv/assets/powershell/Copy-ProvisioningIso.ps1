# Copy-ProvisioningIso.ps1 - Provisioning.CopyProvisioningISO: copies the guest agent ISO into the VM folder.
#
# Request (stdin, JSON): {"iso_path":"<iso>","vm_folder":"<folder from Copy-GoldenImage>"}
# Result data: {iso_path, size_bytes}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $isoPath = [string](Get-AethervRequiredField -Request $Request -Name 'iso_path')
    $folder = [string](Get-AethervRequiredField -Request $Request -Name 'vm_folder')
    if (-not (Test-Path -LiteralPath $isoPath -PathType Leaf)) {
        Stop-Aetherv -Code 'IsoNotFound' -Message ('no provisioning ISO at ' + $isoPath) -Details @{ path = $isoPath }
    }
    if (-not (Test-Path -LiteralPath $folder -PathType Container)) {
        Stop-Aetherv -Code 'PathNotFound' -Message ('the VM folder ' + $folder + ' does not exist') -Details @{ path = $folder }
    }
    $size = [int64](Get-Item -LiteralPath $isoPath).Length
    Assert-AethervFreeSpace -Path $folder -Required $size
    $target = Join-Path -Path $folder -ChildPath ([System.IO.Path]::GetFileName($isoPath))
    [System.IO.File]::Copy($isoPath, $target, $true)
    [ordered]@{ iso_path = $target; size_bytes = [int64](Get-Item -LiteralPath $target).Length }
}
