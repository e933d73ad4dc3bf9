# aetherv-inline: Write-DeployChunk
# Writes pieces of files into temp files; a piece with a name completes its file: SHA-256
# verified, then moved into place. stdin: one JSON line {"dir","token","pieces":[{"temp",
# "offset","name","sha256"}]}, then one base64 line per piece. data: {"installed":[names],
# "mismatch":{"name","actual"}|null}.
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
    $lines = $reader.ReadToEnd() -split "`n"
    $req = $lines[0] | ConvertFrom-Json
    $lock = Join-Path $req.dir '.deploy.lock'
    if (-not (Test-Path -LiteralPath $lock -PathType Leaf) -or [System.IO.File]::ReadAllText($lock).Trim() -ne $req.token) {
        Write-Result @{ ok = $false; error = @{ code = 'LockLost'; message = 'the deployment lock is no longer held by this deployer' } }
        exit 1
    }
    [System.IO.File]::SetLastWriteTimeUtc($lock, [DateTime]::UtcNow)
    $installed = @()
    $mismatch = $null
    $index = 0
    foreach ($piece in $req.pieces) {
        $index++
        $bytes = [Convert]::FromBase64String($lines[$index].Trim())
        $temp = Join-Path $req.dir $piece.temp
        $mode = 'Open'
        if ($piece.offset -eq 0) { $mode = 'Create' }
        $stream = [System.IO.File]::Open($temp, $mode, 'Write', 'None')
        try {
            if ($stream.Length -ne $piece.offset) { throw "temp file $($piece.temp) has $($stream.Length) bytes, expected $($piece.offset)" }
            $null = $stream.Seek(0, 'End')
            $stream.Write($bytes, 0, $bytes.Length)
        } finally {
            $stream.Dispose()
        }
        if ($null -ne $piece.name) {
            $actual = (Get-FileHash -LiteralPath $temp -Algorithm SHA256).Hash.ToLowerInvariant()
            if ($actual -ne $piece.sha256) {
                Remove-Item -LiteralPath $temp -Force
                $mismatch = @{ name = $piece.name; actual = $actual }
                break
            }
            $target = Join-Path $req.dir $piece.name
            if (Test-Path -LiteralPath $target -PathType Leaf) {
                [System.IO.File]::Replace($temp, $target, [NullString]::Value)
            } else {
                [System.IO.File]::Move($temp, $target)
            }
            $installed += $piece.name
        }
    }
    Write-Result @{ ok = $true; data = @{ installed = $installed; mismatch = $mismatch } }
} catch {
    Write-Result @{ ok = $false; error = @{ code = 'DeployFailed'; message = $_.Exception.Message } }
    exit 1
}
