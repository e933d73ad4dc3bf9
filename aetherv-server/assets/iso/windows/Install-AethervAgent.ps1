# Install-AethervAgent.ps1 - installs the Aether-V Windows provisioning agent from the
# provisioning ISO (WindowsProvisioning.iso) and starts it as a scheduled task.
#
# Run by SetupComplete.cmd as SYSTEM. Copies the agent scripts and the ISO's version file to
# %ProgramData%\Aether-V\Agent, registers the task 'Aether-V Provisioning Agent' (at startup,
# as SYSTEM) and starts it. The agent unregisters the task once provisioning has finished.
# Windows PowerShell 5.1. Nothing secret is handled here.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$agentDirectory = Join-Path -Path ([string]$env:ProgramData) -ChildPath 'Aether-V\Agent'
$taskName = 'Aether-V Provisioning Agent'

$null = New-Item -ItemType Directory -Force -Path $agentDirectory
foreach ($name in @('AethervAgent.ps1', 'version')) {
    $source = Join-Path -Path $PSScriptRoot -ChildPath $name
    if (-not (Test-Path -LiteralPath $source -PathType Leaf)) {
        throw "the provisioning media lacks $name"
    }
    Copy-Item -LiteralPath $source -Destination (Join-Path -Path $agentDirectory -ChildPath $name) -Force
}

$script = Join-Path -Path $agentDirectory -ChildPath 'AethervAgent.ps1'
$powershell = Join-Path -Path ([string]$env:SystemRoot) -ChildPath 'System32\WindowsPowerShell\v1.0\powershell.exe'
$action = New-ScheduledTaskAction -Execute $powershell -Argument ('-NoProfile -NonInteractive -ExecutionPolicy Bypass -File "' + $script + '"')
$trigger = New-ScheduledTaskTrigger -AtStartup
$principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -ExecutionTimeLimit (New-TimeSpan -Hours 2) -RestartCount 3 -RestartInterval (New-TimeSpan -Minutes 1)
$null = Register-ScheduledTask -TaskName $taskName -Action $action -Trigger $trigger -Principal $principal -Settings $settings -Force
Start-ScheduledTask -TaskName $taskName
Write-Output "installed the Aether-V provisioning agent in $agentDirectory and started the task '$taskName'"
