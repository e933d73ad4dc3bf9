# Remove-VmKvp.ps1 - removes host-to-guest KVP items that exist (RemoveKvpItems).
#
# Request (stdin, JSON): {"id":"<guid>","keys":["name", ...]} or {"id":"<guid>","prefix":"hlvmm."}
# (with 'prefix', every existing host item whose name starts with it, compared ordinally)
# Result data: {id, removed:[names that existed]}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $keys = @(Get-AethervField -Request $Request -Name 'keys' -Default @())
    $system = Get-AethervKvpComputerSystem -Vm $vm
    $service = @(Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_VirtualSystemManagementService') | Select-Object -First 1
    $settings = @(Get-CimAssociatedInstance -InputObject $system -ResultClassName 'Msvm_VirtualSystemSettingData' |
        Where-Object { $_.VirtualSystemType -eq 'Microsoft:Hyper-V:System:Realized' }) | Select-Object -First 1
    $existing = [ordered]@{}
    if ($null -ne $settings) {
        $kvpSettings = @(Get-CimAssociatedInstance -InputObject $settings -ResultClassName 'Msvm_KvpExchangeComponentSettingData') | Select-Object -First 1
        if ($null -ne $kvpSettings) { $existing = ConvertFrom-AethervKvpXml -Items @($kvpSettings.HostExchangeItems) }
    }
    $prefix = [string](Get-AethervField -Request $Request -Name 'prefix' -Default '')
    if ($prefix.Length -gt 0) {
        $keys = @($existing.Keys | Where-Object { ([string]$_).StartsWith($prefix, [StringComparison]::Ordinal) })
    }
    $removed = @()
    foreach ($key in $keys) {
        $name = [string]$key
        if (-not $existing.Contains($name)) { continue }
        $text = ConvertTo-AethervKvpXml -Name $name -Data ''
        $result = Invoke-CimMethod -InputObject $service -MethodName 'RemoveKvpItems' -Arguments @{ TargetSystem = $system; DataItems = [string[]]@($text) }
        Wait-AethervCimJob -Result $result -What ('RemoveKvpItems ' + $name)
        $removed += $name
    }
    [ordered]@{ id = $vm.Id.ToString(); removed = @($removed) }
}
