# Get-VmKvp.ps1 - the KVP items the guest published (Msvm_KvpExchangeComponent over CIM).
#
# Request (stdin, JSON): {"id":"<guid>"}
# Result data: {id, items:{name:value}, intrinsic:{name:value}}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $system = Get-AethervKvpComputerSystem -Vm $vm
    $component = @(Get-CimAssociatedInstance -InputObject $system -ResultClassName 'Msvm_KvpExchangeComponent') | Select-Object -First 1
    $items = [ordered]@{}
    $intrinsic = [ordered]@{}
    if ($null -ne $component) {
        $items = ConvertFrom-AethervKvpXml -Items @($component.GuestExchangeItems)
        $intrinsic = ConvertFrom-AethervKvpXml -Items @($component.GuestIntrinsicExchangeItems)
    }
    [ordered]@{ id = $vm.Id.ToString(); items = $items; intrinsic = $intrinsic }
}
