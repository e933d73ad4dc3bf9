# Add-VmClusterRole.ps1 - makes the VM a highly available cluster role (Add-ClusterVirtualMachineRole).
#
# Request (stdin, JSON): {"id":"<guid>"}
# Result data: {id, clustered, group}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    if ($null -eq (Get-Command -Module FailoverClusters -Name Add-ClusterVirtualMachineRole -ErrorAction SilentlyContinue)) {
        Stop-Aetherv -Code 'NotClustered' -Message ('host ' + $env:COMPUTERNAME + ' has no failover clustering') -Details @{ vm = $vm.Id.ToString() }
    }
    if ($vm.IsClustered) {
        Stop-Aetherv -Code 'AlreadyClustered' -Message ('VM ' + $vm.Name + ' already is a cluster role') -Details @{ vm = $vm.Id.ToString() }
    }
    $group = FailoverClusters\Add-ClusterVirtualMachineRole -VMId $vm.Id
    [ordered]@{ id = $vm.Id.ToString(); clustered = $true; group = [string]$group.Name }
}
