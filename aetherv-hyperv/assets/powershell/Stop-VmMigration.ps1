# Stop-VmMigration.ps1 - cancels the VM's running migration job before its switch-over
# (Msvm_MigrationJob.RequestStateChange with Terminate, 4). A job that is no longer
# Cancellable (it reached the switch-over) is left to finish.
#
# Request (stdin, JSON): {"id":"<guid>"}
# Result data: {id, cancelled, reason}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $guid = ConvertTo-AethervGuid -Value (Get-AethervRequiredField -Request $Request -Name 'id')
    $job = Get-AethervMigrationJob -VmId $guid
    if ($null -eq $job -or -not (Test-AethervJobActive -JobState $job.JobState)) {
        return [ordered]@{ id = $guid.ToString(); cancelled = $false; reason = 'no migration of this VM is running' }
    }
    if (-not [bool]$job.Cancellable) {
        return [ordered]@{ id = $guid.ToString(); cancelled = $false; reason = 'the migration reached its switch-over and can no longer be cancelled' }
    }
    $result = Invoke-CimMethod -InputObject $job -MethodName 'RequestStateChange' -Arguments @{ RequestedState = [uint16]4 }
    $code = [int]$result.ReturnValue
    if ($code -ne 0 -and $code -ne 4096) {
        return [ordered]@{ id = $guid.ToString(); cancelled = $false; reason = ('the host refused the cancellation (return value ' + $code + ')') }
    }
    [ordered]@{ id = $guid.ToString(); cancelled = $true; reason = $null }
}
