# Get-Inventory.ps1 - every VM on the host (or the VMs with the given ids) in one run, with batched device queries.
#
# Request (stdin, JSON): {} for all VMs, or {"ids":["<guid>", ...]} (fails with VmNotFound when one is missing)
# Result data: {host, collected_at, vms:[<VM shape of AethervCommon.ps1 Get-AethervVmShapes>]}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $ids = @(Get-AethervField -Request $Request -Name 'ids' -Default @())
    if ($ids.Count -eq 0) {
        $vms = @(Hyper-V\Get-VM)
    } else {
        $vms = @(foreach ($id in $ids) { Get-AethervVm -Id $id })
    }
    [ordered]@{
        host         = [string]$env:COMPUTERNAME
        collected_at = Format-AethervDate -Date ([DateTime]::UtcNow)
        vms          = Get-AethervVmShapes -Vms $vms
    }
}
