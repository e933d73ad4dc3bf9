# Move-VmClusterRole.ps1 - moves a clustered VM's role to another node of its cluster
# (Move-ClusterVirtualMachineRole, live or quick). Runs on the VM's owner node and blocks until
# the move ends; another session reads its progress (Get-VmMigration.ps1) or cancels it
# (Stop-VmMigration.ps1).
#
# Request (stdin, JSON): {"id":"<guid>","node":"<host>","migration_type":"Live"|"Quick"}
# Result data: {id, destination_host, with_storage}
# Errors: NotClustered, MigrationCancelled, MigrationFailed (the VM stays on the source node).
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $node = [string](Get-AethervRequiredField -Request $Request -Name 'node')
    $type = [string](Get-AethervRequiredField -Request $Request -Name 'migration_type')
    if ($type -ne 'Live' -and $type -ne 'Quick') {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('migration type must be Live or Quick, got ' + $type) -Details @{ field = 'migration_type' }
    }
    if (-not $vm.IsClustered) {
        Stop-Aetherv -Code 'NotClustered' -Message ('VM ' + $vm.Name + ' is not a cluster role; move it with Move-VM') -Details @{ vm = $vm.Id.ToString() }
    }
    try {
        FailoverClusters\Move-ClusterVirtualMachineRole -VMId $vm.Id -Node $node -MigrationType $type | Out-Null
    } catch {
        $job = Get-AethervMigrationJob -VmId $vm.Id
        $code = 'MigrationFailed'
        if ($null -ne $job -and [int]$job.JobState -eq 8) { $code = 'MigrationCancelled' }
        Stop-Aetherv -Code $code -Message ('moving VM ' + $vm.Name + ' to node ' + $node + ': ' + $_.Exception.Message) -Details @{ vm = $vm.Id.ToString(); destination = $node }
    }
    [ordered]@{ id = $vm.Id.ToString(); destination_host = $node; with_storage = $false }
}
