# Set-VmKvp.ps1 - adds or replaces host-to-guest KVP items (AddKvpItems / ModifyKvpItems on Msvm_VirtualSystemManagementService), one after the other in request order.
#
# Request (stdin, JSON): {"id":"<guid>","items":[{"name":"...","value":"..."}, ...]} (order matters to the guest protocol)
# Result data: {id, written}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $items = Get-AethervRequiredField -Request $Request -Name 'items'
    $system = Get-AethervKvpComputerSystem -Vm $vm
    $service = @(Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_VirtualSystemManagementService') | Select-Object -First 1
    $settings = @(Get-CimAssociatedInstance -InputObject $system -ResultClassName 'Msvm_VirtualSystemSettingData' |
        Where-Object { $_.VirtualSystemType -eq 'Microsoft:Hyper-V:System:Realized' }) | Select-Object -First 1
    $existing = [ordered]@{}
    if ($null -ne $settings) {
        $kvpSettings = @(Get-CimAssociatedInstance -InputObject $settings -ResultClassName 'Msvm_KvpExchangeComponentSettingData') | Select-Object -First 1
        if ($null -ne $kvpSettings) { $existing = ConvertFrom-AethervKvpXml -Items @($kvpSettings.HostExchangeItems) }
    }
    $written = 0
    foreach ($item in @($items)) {
        $name = [string](Get-AethervRequiredField -Request $item -Name 'name')
        $value = [string](Get-AethervField -Request $item -Name 'value' -Default '')
        $text = ConvertTo-AethervKvpXml -Name $name -Data $value
        $method = 'AddKvpItems'
        if ($existing.Contains($name)) { $method = 'ModifyKvpItems' }
        $result = Invoke-CimMethod -InputObject $service -MethodName $method -Arguments @{ TargetSystem = $system; DataItems = [string[]]@($text) }
        Wait-AethervCimJob -Result $result -What ($method + ' ' + $name)
        $existing[$name] = $value
        $written++
    }
    [ordered]@{ id = $vm.Id.ToString(); written = $written }
}
