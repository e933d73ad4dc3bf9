# Test-VmMigration.ps1 - checks whether a VM can live-migrate (Compare-VM).
#
# Request (stdin, JSON): {"id":"<guid>","destination_host":"<host>","with_storage":bool,"destination_path":"<folder>"|null}
# Result data: {compatible, incompatibilities:[{message, message_id}]}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $destination = [string](Get-AethervRequiredField -Request $Request -Name 'destination_host')
    $compare = @{ VM = $vm; DestinationHost = $destination }
    if ([bool](Get-AethervField -Request $Request -Name 'with_storage' -Default $false)) {
        $compare['IncludeStorage'] = $true
        $path = Get-AethervField -Request $Request -Name 'destination_path'
        if ($null -ne $path) { $compare['DestinationStoragePath'] = [string]$path }
    }
    $report = Hyper-V\Compare-VM @compare
    $incompatibilities = @(foreach ($item in @($report.Incompatibilities)) {
        if ($null -eq $item) { continue }
        [ordered]@{ message = [string]$item.Message; message_id = [int64]$item.MessageId }
    })
    [ordered]@{ compatible = ($incompatibilities.Count -eq 0); incompatibilities = $incompatibilities }
}
