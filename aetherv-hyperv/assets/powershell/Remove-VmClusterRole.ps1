# Remove-VmClusterRole.ps1 - removes the VM's cluster group (Remove-ClusterGroup -RemoveResources); the VM stays registered on its host.
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
    if (-not $vm.IsClustered) {
        return [ordered]@{ id = $vm.Id.ToString(); clustered = $false; group = $null }
    }
    $wanted = $vm.Id.ToString()
    $resource = @(FailoverClusters\Get-ClusterResource | Where-Object { $_.ResourceType.Name -eq 'Virtual Machine' } | Where-Object {
        [string](FailoverClusters\Get-ClusterParameter -InputObject $_ -Name 'VmID').Value -eq $wanted
    }) | Select-Object -First 1
    if ($null -eq $resource) {
        Stop-Aetherv -Code 'ClusterRoleNotFound' -Message ('no cluster resource for VM ' + $vm.Name) -Details @{ vm = $wanted }
    }
    $group = $resource.OwnerGroup
    FailoverClusters\Remove-ClusterGroup -InputObject $group -RemoveResources -Force | Out-Null
    [ordered]@{ id = $wanted; clustered = $false; group = [string]$group.Name }
}
