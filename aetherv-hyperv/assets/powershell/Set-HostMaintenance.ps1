# Set-HostMaintenance.ps1 - writes the host's maintenance state file and pauses or resumes its failover cluster node.
#
# Request (stdin, JSON): {"record":{state, since, reason, ticket, requested_by, job, vms[], silence_id},"cluster_node":"none|suspend_drain|resume|resume_failback"}
# The state file is maintenance.json next to this script (the install directory); a record with state "active" and no VMs removes it.
# cluster_node: suspend_drain runs Suspend-ClusterNode -Drain -Wait (the cluster moves the node's roles); resume runs Resume-ClusterNode
# (-Failback Immediate for resume_failback, else NoFailback). On a host without a cluster any action but none fails with NotClustered.
# Result data: {record: {...}|null, cluster_node_state: "Up|Paused|Down|Joining"|null, drain_status: "NotInitiated|InProgress|Completed|Failed"|null}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $record = Get-AethervRequiredField -Request $Request -Name 'record'
    $action = [string](Get-AethervField -Request $Request -Name 'cluster_node' -Default 'none')
    if (@('none', 'suspend_drain', 'resume', 'resume_failback') -notcontains $action) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('unknown cluster_node action ' + $action) -Details @{ field = 'cluster_node' }
    }
    $state = [string](Get-AethervRequiredField -Request $record -Name 'state')
    if (@('active', 'draining', 'maintenance', 'resuming', 'failed_drain') -notcontains $state) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('unknown host state ' + $state) -Details @{ field = 'record.state' }
    }

    $clustered = $null -ne (Get-Command -Module FailoverClusters -Name Get-ClusterNode -ErrorAction SilentlyContinue)
    $node = $null
    if ($clustered) {
        try { $node = FailoverClusters\Get-ClusterNode -Name $env:COMPUTERNAME } catch { $node = $null }
    }
    if ($action -ne 'none' -and $null -eq $node) {
        Stop-Aetherv -Code 'NotClustered' -Message ('host ' + $env:COMPUTERNAME + ' is not a failover cluster node') -Details @{ field = 'cluster_node' }
    }
    if ($action -eq 'suspend_drain') {
        $null = FailoverClusters\Suspend-ClusterNode -Name $env:COMPUTERNAME -Drain -Wait
    } elseif ($action -eq 'resume') {
        $null = FailoverClusters\Resume-ClusterNode -Name $env:COMPUTERNAME -Failback NoFailback
    } elseif ($action -eq 'resume_failback') {
        $null = FailoverClusters\Resume-ClusterNode -Name $env:COMPUTERNAME -Failback Immediate
    }

    $path = Join-Path -Path $PSScriptRoot -ChildPath 'maintenance.json'
    $vms = @(Get-AethervField -Request $record -Name 'vms' -Default @())
    $written = $null
    if ($state -eq 'active' -and $vms.Count -eq 0) {
        if (Test-Path -LiteralPath $path -PathType Leaf) { Remove-Item -LiteralPath $path -Force }
    } else {
        $json = ConvertTo-Json -InputObject $record -Depth 6 -Compress
        $temporary = $path + '.tmp'
        [System.IO.File]::WriteAllText($temporary, $json, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
        Move-Item -LiteralPath $temporary -Destination $path -Force
        $written = ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText($path))
    }

    $nodeState = $null
    $drainStatus = $null
    if ($null -ne $node) {
        $after = FailoverClusters\Get-ClusterNode -Name $env:COMPUTERNAME
        $nodeState = [string]$after.State
        $drainStatus = [string]$after.DrainStatus
    }
    [ordered]@{ record = $written; cluster_node_state = $nodeState; drain_status = $drainStatus }
}
