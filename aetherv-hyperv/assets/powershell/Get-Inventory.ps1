# Get-Inventory.ps1 - every VM on the host (or the VMs with the given ids) in one run, with batched device queries.
#
# Request (stdin, JSON): {} for all VMs, {"since":"<digest>"} for all VMs unless the set still has
# that digest, or {"ids":["<guid>", ...]} (fails with VmNotFound when one is missing)
# Result data: {host, collected_at, digest, unchanged, vms:[<VM shape of AethervCommon.ps1 Get-AethervVmShapes>]}
#   digest: Get-AethervInventoryDigest of every VM (not with "ids"); unchanged: true (and no
#   VMs) when it equals "since".
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $ids = @(Get-AethervField -Request $Request -Name 'ids' -Default @())
    $since = [string](Get-AethervField -Request $Request -Name 'since' -Default '')
    $now = [DateTime]::UtcNow
    if ($ids.Count -eq 0) {
        $vms = @(Hyper-V\Get-VM)
    } else {
        $vms = @(foreach ($id in $ids) { Get-AethervVm -Id $id })
    }
    $shapes = Get-AethervVmShapes -Vms $vms
    $result = [ordered]@{
        host         = [string]$env:COMPUTERNAME
        collected_at = Format-AethervDate -Date $now
        digest       = $null
        unchanged    = $false
        vms          = $shapes
    }
    if ($ids.Count -eq 0) {
        $digest = Get-AethervInventoryDigest -Shapes $shapes -Vms $vms -Now $now
        $result['digest'] = $digest
        if ($since.Length -gt 0 -and $since -eq $digest) {
            $result['unchanged'] = $true
            $result['vms'] = @()
        }
    }
    $result
}
