# Update-VmNetworkAdapter.ps1 - add, change or remove one network adapter of a VM.
#
# Request (stdin, JSON): {"id":"<vm guid>","action":"add","name":"...","legacy":false,"settings":{...}}
#   | {"id","action":"set","adapter":"<adapter guid>","settings":{...}}
#   | {"id","action":"remove","adapter":"<adapter guid>"}
# settings (each optional): switch_name, vlan_id (null: untagged), mac {"mode":"dynamic"} or
#   {"mode":"static","address":"00155D..."}, mac_spoofing, dhcp_guard, router_guard,
#   bandwidth {"maximum_bps","minimum_bps"}
# Result data: {id, adapter:<adapter shape>|null, removed:"<adapter guid>"|null}
# Hyper-V's rules, checked before acting: a legacy adapter exists only on generation 1 and is
# added or removed only while the VM is Off; a synthetic adapter is added or removed while the
# VM runs only on generation 2; a static MAC address changes only while the VM is Off. An
# adapter this script added is removed again when its settings cannot be applied.
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

function Get-AethervAdapterGuid {
    param($Adapter)
    $tail = ([string]$Adapter.Id).Split('\')[-1]
    $guid = [Guid]::Empty
    if ([Guid]::TryParse($tail, [ref]$guid)) { return $guid.ToString() }
    return $tail
}

function Find-AethervAdapter {
    param($Vm, $AdapterId)
    $guid = [Guid]::Empty
    if (-not [Guid]::TryParse([string]$AdapterId, [ref]$guid)) {
        Stop-Aetherv -Code 'InvalidRequest' -Message 'the adapter id is not a GUID' -Details @{ field = 'adapter' }
    }
    foreach ($adapter in @(Hyper-V\Get-VMNetworkAdapter -VM $Vm)) {
        if ((Get-AethervAdapterGuid -Adapter $adapter) -eq $guid.ToString()) { return $adapter }
    }
    Stop-Aetherv -Code 'AdapterNotFound' -Message ('VM ' + $Vm.Name + ' has no network adapter ' + $guid.ToString()) -Details @{ vm = $Vm.Id.ToString(); adapter = $guid.ToString() }
}

function Assert-AethervOff {
    param($Vm, [string]$Rule)
    if ($Vm.State.ToString() -ne 'Off') {
        $details = Get-AethervStateDetails -Vm $Vm
        $details['rule'] = $Rule
        Stop-Aetherv -Code 'InvalidVmState' -Message ($Rule + '; VM ' + $Vm.Name + ' is ' + $Vm.State.ToString()) -Details $details
    }
}

function Assert-AethervHotPlug {
    # Adding or removing an adapter while the VM is not Off.
    param($Vm, [bool]$Legacy)
    if ($Legacy) {
        Assert-AethervOff -Vm $Vm -Rule 'a legacy network adapter is added or removed only while the VM is Off'
    } elseif ([int]$Vm.Generation -ne 2) {
        Assert-AethervOff -Vm $Vm -Rule 'a generation 1 VM adds or removes network adapters only while Off'
    }
}

function Set-AethervAdapterSettings {
    param($Vm, $Adapter, $Settings)
    if ($null -eq $Settings) { return }
    $switch = Get-AethervField -Request $Settings -Name 'switch_name'
    if ($null -ne $switch) {
        Hyper-V\Connect-VMNetworkAdapter -VMNetworkAdapter $Adapter -SwitchName ([string]$switch)
    }
    if ($null -ne $Settings.PSObject.Properties['vlan_id']) {
        $vlan = $Settings.vlan_id
        if ($null -eq $vlan) {
            Hyper-V\Set-VMNetworkAdapterVlan -VMNetworkAdapter $Adapter -Untagged
        } else {
            Hyper-V\Set-VMNetworkAdapterVlan -VMNetworkAdapter $Adapter -Access -VlanId ([int]$vlan)
        }
    }
    $mac = Get-AethervField -Request $Settings -Name 'mac'
    if ($null -ne $mac) {
        Assert-AethervOff -Vm $Vm -Rule 'the MAC address of an adapter changes only while the VM is Off'
        if ([string]$mac.mode -eq 'dynamic') {
            Hyper-V\Set-VMNetworkAdapter -VMNetworkAdapter $Adapter -DynamicMacAddress
        } else {
            Hyper-V\Set-VMNetworkAdapter -VMNetworkAdapter $Adapter -StaticMacAddress ([string]$mac.address)
        }
    }
    $spoofing = Get-AethervField -Request $Settings -Name 'mac_spoofing'
    if ($null -ne $spoofing) {
        $value = $(if ([bool]$spoofing) { 'On' } else { 'Off' })
        Hyper-V\Set-VMNetworkAdapter -VMNetworkAdapter $Adapter -MacAddressSpoofing $value
    }
    $dhcp = Get-AethervField -Request $Settings -Name 'dhcp_guard'
    if ($null -ne $dhcp) {
        $value = $(if ([bool]$dhcp) { 'On' } else { 'Off' })
        Hyper-V\Set-VMNetworkAdapter -VMNetworkAdapter $Adapter -DhcpGuard $value
    }
    $router = Get-AethervField -Request $Settings -Name 'router_guard'
    if ($null -ne $router) {
        $value = $(if ([bool]$router) { 'On' } else { 'Off' })
        Hyper-V\Set-VMNetworkAdapter -VMNetworkAdapter $Adapter -RouterGuard $value
    }
    $bandwidth = Get-AethervField -Request $Settings -Name 'bandwidth'
    if ($null -ne $bandwidth) {
        Hyper-V\Set-VMNetworkAdapter -VMNetworkAdapter $Adapter -MaximumBandwidth ([int64]$bandwidth.maximum_bps) -MinimumBandwidthAbsolute ([int64]$bandwidth.minimum_bps)
    }
}

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $action = [string](Get-AethervRequiredField -Request $Request -Name 'action')
    $settings = Get-AethervField -Request $Request -Name 'settings'
    if ($action -eq 'add') {
        $legacy = [bool](Get-AethervField -Request $Request -Name 'legacy' -Default $false)
        if ($legacy -and [int]$vm.Generation -eq 2) {
            Stop-Aetherv -Code 'InvalidRequest' -Message 'a generation 2 VM has no legacy network adapters' -Details @{ field = 'legacy' }
        }
        Assert-AethervHotPlug -Vm $vm -Legacy $legacy
        $name = [string](Get-AethervField -Request $Request -Name 'name' -Default '')
        if ($name.Length -eq 0) { $name = 'Network Adapter' }
        $adapter = Hyper-V\Add-VMNetworkAdapter -VM $vm -Name $name -IsLegacy $legacy -Passthru
        try {
            Set-AethervAdapterSettings -Vm $vm -Adapter $adapter -Settings $settings
        } catch {
            $failure = $_
            try { Hyper-V\Remove-VMNetworkAdapter -VMNetworkAdapter $adapter -Confirm:$false } catch { $null = $_ }
            throw $failure
        }
        $id = Get-AethervAdapterGuid -Adapter $adapter
        return [ordered]@{ id = $vm.Id.ToString(); adapter = ConvertTo-AethervNicShape -Adapter (Find-AethervAdapter -Vm $vm -AdapterId $id); removed = $null }
    }
    if ($action -eq 'set') {
        $adapter = Find-AethervAdapter -Vm $vm -AdapterId (Get-AethervRequiredField -Request $Request -Name 'adapter')
        Set-AethervAdapterSettings -Vm $vm -Adapter $adapter -Settings $settings
        $id = Get-AethervAdapterGuid -Adapter $adapter
        return [ordered]@{ id = $vm.Id.ToString(); adapter = ConvertTo-AethervNicShape -Adapter (Find-AethervAdapter -Vm $vm -AdapterId $id); removed = $null }
    }
    if ($action -eq 'remove') {
        $adapter = Find-AethervAdapter -Vm $vm -AdapterId (Get-AethervRequiredField -Request $Request -Name 'adapter')
        Assert-AethervHotPlug -Vm $vm -Legacy ([bool]$adapter.IsLegacy)
        $id = Get-AethervAdapterGuid -Adapter $adapter
        Hyper-V\Remove-VMNetworkAdapter -VMNetworkAdapter $adapter -Confirm:$false
        return [ordered]@{ id = $vm.Id.ToString(); adapter = $null; removed = $id }
    }
    Stop-Aetherv -Code 'InvalidRequest' -Message ('unknown action ' + $action + '; add, set or remove') -Details @{ field = 'action' }
}
