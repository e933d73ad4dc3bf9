# aetherv-inline: Lock-Deploy
# Takes the host-wide deployment lock (<dir>\.deploy.lock, created with CreateNew; a lock not
# refreshed for stale_seconds is broken). stdin: {"dir","token","stale_seconds","files":[{"name","size"}]}.
# data: {"acquired","holder","age_seconds","version","hashes":{name:sha256}}.
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
    $null = New-Item -ItemType Directory -Force -Path $req.dir
    $lock = Join-Path $req.dir '.deploy.lock'
    $acquired = $false
    $holder = $null
    $age = $null
    foreach ($attempt in 1, 2) {
        try {
            $stream = [System.IO.File]::Open($lock, 'CreateNew', 'Write', 'None')
            try {
                $bytes = [System.Text.Encoding]::UTF8.GetBytes($req.token)
                $stream.Write($bytes, 0, $bytes.Length)
            } finally {
                $stream.Dispose()
            }
            $acquired = $true
            break
        } catch {
            if (-not (Test-Path -LiteralPath $lock -PathType Leaf)) { continue }
            $age = [int]([DateTime]::UtcNow - [System.IO.File]::GetLastWriteTimeUtc($lock)).TotalSeconds
            $holder = [System.IO.File]::ReadAllText($lock).Trim()
            if ($attempt -eq 2 -or $age -le $req.stale_seconds) { break }
            if ([System.IO.File]::ReadAllText($lock).Trim() -eq $holder) {
                Remove-Item -LiteralPath $lock -Force
            }
        }
    }
    $version = $null
    $file = Join-Path $req.dir 'version.txt'
    if (Test-Path -LiteralPath $file -PathType Leaf) {
        $version = [System.IO.File]::ReadAllText($file).Trim()
    }
    $hashes = @{}
    if ($acquired) {
        Get-ChildItem -LiteralPath $req.dir -Filter '.deploy-*.tmp' -Force | Remove-Item -Force
        foreach ($f in $req.files) {
            $path = Join-Path $req.dir $f.name
            if ((Test-Path -LiteralPath $path -PathType Leaf) -and (Get-Item -LiteralPath $path).Length -eq $f.size) {
                $hashes[$f.name] = (Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash.ToLowerInvariant()
            }
        }
    }
    $data = @{ acquired = $acquired; holder = $holder; age_seconds = $age; version = $version; hashes = $hashes }
    Write-Result @{ ok = $true; data = $data }
} catch {
    Write-Result @{ ok = $false; error = @{ code = 'DeployFailed'; message = $_.Exception.Message } }
    exit 1
}
