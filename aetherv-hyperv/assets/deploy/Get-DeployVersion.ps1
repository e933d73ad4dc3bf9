# aetherv-inline: Get-DeployVersion
# Reads the installed bundle version. stdin: {"dir":"<install dir>"}.
# data: {"version": "<hex>" | null}.
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
    $file = Join-Path $req.dir 'version.txt'
    $version = $null
    if (Test-Path -LiteralPath $file -PathType Leaf) {
        $version = [System.IO.File]::ReadAllText($file).Trim()
    }
    Write-Result @{ ok = $true; data = @{ version = $version } }
} catch {
    Write-Result @{ ok = $false; error = @{ code = 'DeployFailed'; message = $_.Exception.Message } }
    exit 1
}
