# Move-ManagedVm.ps1 - live-migrates a VM (Move-VM, or Move-ClusterVirtualMachineRole for clustered VMs without storage).
#
# Request (stdin, JSON): {"id":"<guid>","destination_host":"<host>","with_storage":bool,"destination_path":"<folder>"|null}
# Result data: {id, destination_host, with_storage}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $destination = [string](Get-AethervRequiredField -Request $Request -Name 'destination_host')
    $withStorage = [bool](Get-AethervField -Request $Request -Name 'with_storage' -Default $false)
    $path = Get-AethervField -Request $Request -Name 'destination_path'
    $compare = @{ VM = $vm; DestinationHost = $destination }
    if ($withStorage) {
        $compare['IncludeStorage'] = $true
        if ($null -ne $path) { $compare['DestinationStoragePath'] = [string]$path }
    }
    $report = Hyper-V\Compare-VM @compare
    $messages = @(@($report.Incompatibilities) | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_.Message })
    if ($messages.Count -gt 0) {
        Stop-Aetherv -Code 'MigrationIncompatible' -Message ($messages -join '; ') -Details @{ vm = $vm.Id.ToString(); destination = $destination }
    }
    if ($vm.IsClustered -and -not $withStorage) {
        FailoverClusters\Move-ClusterVirtualMachineRole -VMId $vm.Id -Node $destination -MigrationType Live | Out-Null
    } else {
        Hyper-V\Move-VM @compare | Out-Null
    }
    [ordered]@{ id = $vm.Id.ToString(); destination_host = $destination; with_storage = $withStorage }
}
