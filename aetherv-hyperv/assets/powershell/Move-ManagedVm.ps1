# Move-ManagedVm.ps1 - moves a VM to another host (Move-VM: live for a running VM, with or
# without its storage; a saved or off VM moves as it is), or only its storage to another
# folder on the same host (Move-VMStorage). Clustered VMs move between nodes with
# Move-VmClusterRole.ps1 instead. Blocks until the host's migration job ends; another session
# reads its progress (Get-VmMigration.ps1) or cancels it (Stop-VmMigration.ps1).
#
# Request (stdin, JSON): {"id":"<guid>","destination_host":"<host>","with_storage":bool,"destination_path":"<folder>"|null,"storage_only":bool}
# Result data: {id, destination_host, with_storage}
# Errors: MigrationIncompatible (Compare-VM found problems; nothing moved), MigrationCancelled
# (the migration job was cancelled before its switch-over), MigrationFailed (the host's
# migration job failed; the VM stays on the source).
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
    $storageOnly = [bool](Get-AethervField -Request $Request -Name 'storage_only' -Default $false)
    $path = Get-AethervField -Request $Request -Name 'destination_path'
    try {
        if ($storageOnly) {
            Hyper-V\Move-VMStorage -VM $vm -DestinationStoragePath ([string]$path) | Out-Null
            return [ordered]@{ id = $vm.Id.ToString(); destination_host = $env:COMPUTERNAME; with_storage = $true }
        }
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
        Hyper-V\Move-VM @compare | Out-Null
    } catch {
        if ($null -ne $_.Exception.Data['AethervCode']) { throw }
        $job = Get-AethervMigrationJob -VmId $vm.Id
        $code = 'MigrationFailed'
        if ($null -ne $job -and [int]$job.JobState -eq 8) { $code = 'MigrationCancelled' }
        Stop-Aetherv -Code $code -Message ('moving VM ' + $vm.Name + ': ' + $_.Exception.Message) -Details @{ vm = $vm.Id.ToString(); destination = $destination }
    }
    [ordered]@{ id = $vm.Id.ToString(); destination_host = $destination; with_storage = $withStorage }
}
