# aetherv-inline: Complete-Deploy
# Writes the version file (when version is set; last, after every file is in place), removes
# this deployer's temp files and releases its lock. stdin: {"dir","token","version"|null}.
# data: {"released": bool, "version"}.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Write-Result($result) {
    Write-Output '===AETHERV-RESULT-BEGIN==='
    Write-Output (ConvertTo-Json -InputObject $result -Compress -Depth 5)
    Write-Output '===AETHERV-RESULT-END==='
}
try {
    $reader = New-Object System.IO.StreamReader([Console]::OpenStandardInput(), (New-Object System.Text.UTF8Encoding($false)))
    $req = $reader.ReadToEnd() | ConvertFrom-Json
    $lock = Join-Path $req.dir '.deploy.lock'
    $mine = (Test-Path -LiteralPath $lock -PathType Leaf) -and [System.IO.File]::ReadAllText($lock).Trim() -eq $req.token
    if ($null -ne $req.version) {
        if (-not $mine) {
            Write-Result @{ ok = $false; error = @{ code = 'LockLost'; message = 'the deployment lock is no longer held by this deployer' } }
            exit 1
        }
        $temp = Join-Path $req.dir ('.deploy-' + $req.token + '-version.tmp')
        [System.IO.File]::WriteAllText($temp, $req.version)
        $file = Join-Path $req.dir 'version.txt'
        if (Test-Path -LiteralPath $file -PathType Leaf) {
            [System.IO.File]::Replace($temp, $file, [NullString]::Value)
        } else {
            [System.IO.File]::Move($temp, $file)
        }
    }
    if (Test-Path -LiteralPath $req.dir -PathType Container) {
        Get-ChildItem -LiteralPath $req.dir -Filter ('.deploy-' + $req.token + '-*.tmp') -Force | Remove-Item -Force
    }
    if ($mine) { Remove-Item -LiteralPath $lock -Force }
    Write-Result @{ ok = $true; data = @{ released = $mine; version = $req.version } }
} catch {
    Write-Result @{ ok = $false; error = @{ code = 'DeployFailed'; message = $_.Exception.Message } }
    exit 1
}
