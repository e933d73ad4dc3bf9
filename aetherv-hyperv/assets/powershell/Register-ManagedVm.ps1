# Register-ManagedVm.ps1 - Provisioning.RegisterVM: creates a generation 2 VM over a copied VHDX (memory, processors, ISO, switch, VLAN, firmware, notes), optionally starts it; removes the half-made VM on failure.
#
# Request (stdin, JSON): {"name","vm_folder","vhdx_path","iso_path"|null,"processor_count","memory_startup_bytes","dynamic_memory":{"minimum_bytes","maximum_bytes"}|null,"switch_name"|null,"vlan_id"|null,"notes","start","boot":{"secure_boot","secure_boot_template","tpm"}|null}
# Network: "switch_name" null leaves the adapter unconnected (no guessing among switches).
# Firmware: "boot" null keeps Hyper-V's defaults (Secure Boot on, MicrosoftWindows template), which a Linux guest does not boot with.
# Result data: <VM shape of AethervCommon.ps1 Get-AethervVmShapes>
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $name = [string](Get-AethervRequiredField -Request $Request -Name 'name')
    $folder = [string](Get-AethervRequiredField -Request $Request -Name 'vm_folder')
    $vhdxPath = [string](Get-AethervRequiredField -Request $Request -Name 'vhdx_path')
    $isoPath = Get-AethervField -Request $Request -Name 'iso_path'
    $processors = [int](Get-AethervRequiredField -Request $Request -Name 'processor_count')
    $memory = [int64](Get-AethervRequiredField -Request $Request -Name 'memory_startup_bytes')
    $dynamic = Get-AethervField -Request $Request -Name 'dynamic_memory'
    $switchName = Get-AethervField -Request $Request -Name 'switch_name'
    $vlan = Get-AethervField -Request $Request -Name 'vlan_id'
    $notes = [string](Get-AethervField -Request $Request -Name 'notes' -Default '')
    $start = [bool](Get-AethervField -Request $Request -Name 'start' -Default $false)
    $boot = Get-AethervField -Request $Request -Name 'boot'

    if ($null -ne (Get-AethervVmByName -Name $name)) {
        Stop-Aetherv -Code 'VmExists' -Message ('a VM named ' + $name + ' already exists') -Details @{ name = $name }
    }
    if (-not (Test-Path -LiteralPath $vhdxPath -PathType Leaf)) {
        Stop-Aetherv -Code 'PathNotFound' -Message ('no disk at ' + $vhdxPath) -Details @{ path = $vhdxPath }
    }
    if ($null -ne $isoPath -and -not (Test-Path -LiteralPath ([string]$isoPath) -PathType Leaf)) {
        Stop-Aetherv -Code 'IsoNotFound' -Message ('no ISO at ' + [string]$isoPath) -Details @{ path = [string]$isoPath }
    }
    $switches = @(Hyper-V\Get-VMSwitch)
    if ($null -ne $switchName) {
        $switch = @($switches | Where-Object { $_.Name -eq [string]$switchName }) | Select-Object -First 1
        if ($null -eq $switch) {
            Stop-Aetherv -Code 'SwitchNotFound' -Message ('no virtual switch named ' + [string]$switchName) -Details @{ switch = [string]$switchName }
        }
    } else {
        # The caller resolves the network (named network or the host's only External switch);
        # without a switch name the adapter stays unconnected instead of guessing.
        $switch = $null
    }

    $parent = Split-Path -Path $folder -Parent
    $newVm = @{ Name = $name; Generation = 2; MemoryStartupBytes = $memory; VHDPath = $vhdxPath; Path = $parent }
    if ($null -ne $switch) { $newVm['SwitchName'] = [string]$switch.Name }
    $vm = Hyper-V\New-VM @newVm
    try {
        Hyper-V\Set-VMProcessor -VM $vm -Count $processors
        if ($null -ne $dynamic) {
            Hyper-V\Set-VMMemory -VM $vm -DynamicMemoryEnabled $true -StartupBytes $memory -MinimumBytes ([int64]$dynamic.minimum_bytes) -MaximumBytes ([int64]$dynamic.maximum_bytes)
        } else {
            Hyper-V\Set-VMMemory -VM $vm -DynamicMemoryEnabled $false -StartupBytes $memory
        }
        if ($null -ne $isoPath) {
            Hyper-V\Add-VMDvdDrive -VM $vm -Path ([string]$isoPath)
        }
        $bootDisk = @(Hyper-V\Get-VMHardDiskDrive -VM $vm) | Select-Object -First 1
        if ($null -ne $bootDisk) { Hyper-V\Set-VMFirmware -VM $vm -FirstBootDevice $bootDisk }
        if ($null -ne $vlan) {
            Hyper-V\Set-VMNetworkAdapterVlan -VM $vm -Access -VlanId ([int]$vlan)
        }
        if ($null -ne $boot) {
            if ([bool]$boot.secure_boot) {
                Hyper-V\Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate ([string]$boot.secure_boot_template)
            } else {
                Hyper-V\Set-VMFirmware -VM $vm -EnableSecureBoot Off
            }
            if ([bool]$boot.tpm) {
                # A vTPM needs a key protector first; a local one (no Host Guardian Service).
                Hyper-V\Set-VMKeyProtector -VM $vm -NewLocalKeyProtector
                Hyper-V\Enable-VMTPM -VM $vm
            }
        }
        Hyper-V\Set-VM -VM $vm -Notes $notes
        if ($start) {
            Assert-AethervMemoryForStart -Vm $vm
            Hyper-V\Start-VM -VM $vm
        }
    } catch {
        $failure = $_
        try { Hyper-V\Remove-VM -VM $vm -Force } catch { Write-Warning ('could not remove the half-made VM: ' + $_.Exception.Message) }
        throw $failure
    }
    $vm = Hyper-V\Get-VM -Id $vm.Id
    @(Get-AethervVmShapes -Vms @($vm))[0]
}
