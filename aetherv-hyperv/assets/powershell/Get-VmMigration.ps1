# Get-VmMigration.ps1 - the VM's migration job on this host (Msvm_MigrationJob): percent
# complete, job state, whether it can still be cancelled.
#
# Request (stdin, JSON): {"id":"<guid>"}
# Result data: {id, active, percent_complete, job_state, cancellable, status, destination_host, error}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $guid = ConvertTo-AethervGuid -Value (Get-AethervRequiredField -Request $Request -Name 'id')
    $job = Get-AethervMigrationJob -VmId $guid
    if ($null -eq $job) {
        return [ordered]@{ id = $guid.ToString(); active = $false; percent_complete = 0; job_state = $null; cancellable = $false; status = $null; destination_host = $null; error = $null }
    }
    $errorText = $null
    if ([int]$job.JobState -eq 10) { $errorText = [string]$job.ErrorDescription }
    [ordered]@{
        id = $guid.ToString()
        active = [bool](Test-AethervJobActive -JobState $job.JobState)
        percent_complete = [int]$job.PercentComplete
        job_state = [int]$job.JobState
        cancellable = [bool]$job.Cancellable
        status = [string]$job.JobStatus
        destination_host = [string]$job.DestinationHost
        error = $errorText
    }
}
