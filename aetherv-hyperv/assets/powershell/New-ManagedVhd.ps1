# New-ManagedVhd.ps1 - creates a new blank VHDX (dynamically expanding or fixed); refuses an existing file.
#
# Request (stdin, JSON): {"path":"<absolute .vhdx path>","size_bytes":<bytes>,"fixed":true|false}
# Result data: {path, size_bytes, file_size_bytes}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $path = [string](Get-AethervRequiredField -Request $Request -Name 'path')
    $size = [int64](Get-AethervRequiredField -Request $Request -Name 'size_bytes')
    $fixed = [bool](Get-AethervField -Request $Request -Name 'fixed' -Default $false)
    if (Test-Path -LiteralPath $path) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('the file ' + $path + ' already exists') -Details @{ field = 'path' }
    }
    $folder = Split-Path -Path $path -Parent
    if (-not (Test-Path -LiteralPath $folder -PathType Container)) {
        [void](New-Item -Path $folder -ItemType Directory -Force)
    }
    if ($fixed) {
        Assert-AethervFreeSpace -Path $folder -Required $size
        $vhd = Hyper-V\New-VHD -Path $path -SizeBytes $size -Fixed
    } else {
        $vhd = Hyper-V\New-VHD -Path $path -SizeBytes $size -Dynamic
    }
    [ordered]@{ path = [string]$vhd.Path; size_bytes = [int64]$vhd.Size; file_size_bytes = [int64]$vhd.FileSize }
}
