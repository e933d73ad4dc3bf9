# Set-ManagedVmSettings.ps1 - changes a VM's processors, memory, notes, automatic actions, Secure Boot and vTPM.
#
# Request (stdin, JSON): {"id":"<guid>", and any of: "processor_count", "memory_startup_bytes",
#   "dynamic_memory", "memory_minimum_bytes", "memory_maximum_bytes", "notes",
#   "automatic_start_action" (Nothing|StartIfRunning|Start), "automatic_stop_action"
#   (TurnOff|Save|ShutDown), "automatic_start_delay_seconds", "secure_boot", "tpm_enabled"}
# Hyper-V's state rules are checked first (InvalidVmState): processor count, dynamic memory
# on/off, Secure Boot, vTPM and the automatic stop action need the VM Off; a running VM's
# memory changes only with dynamic memory, within its range (minimum down, maximum up).
# Result data: the VM in the shape of AethervCommon.ps1 Get-AethervVmShapes, after the change.
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $processors = Get-AethervField -Request $Request -Name 'processor_count' -Default $null
    $startup = Get-AethervField -Request $Request -Name 'memory_startup_bytes' -Default $null
    $dynamic = Get-AethervField -Request $Request -Name 'dynamic_memory' -Default $null
    $minimum = Get-AethervField -Request $Request -Name 'memory_minimum_bytes' -Default $null
    $maximum = Get-AethervField -Request $Request -Name 'memory_maximum_bytes' -Default $null
    $notes = Get-AethervField -Request $Request -Name 'notes' -Default $null
    $startAction = Get-AethervField -Request $Request -Name 'automatic_start_action' -Default $null
    $stopAction = Get-AethervField -Request $Request -Name 'automatic_stop_action' -Default $null
    $startDelay = Get-AethervField -Request $Request -Name 'automatic_start_delay_seconds' -Default $null
    $secureBoot = Get-AethervField -Request $Request -Name 'secure_boot' -Default $null
    $tpm = Get-AethervField -Request $Request -Name 'tpm_enabled' -Default $null

    $off = ([int]$vm.State -eq 3)
    $details = Get-AethervStateDetails -Vm $vm
    $needOff = @()
    if ($null -ne $processors -and [int]$processors -ne [int]$vm.ProcessorCount) { $needOff += 'the processor count' }
    if ($null -ne $dynamic -and [bool]$dynamic -ne [bool]$vm.DynamicMemoryEnabled) { $needOff += 'dynamic memory (on/off)' }
    if ($null -ne $stopAction -and [string]$stopAction -ne $vm.AutomaticStopAction.ToString()) { $needOff += 'the automatic stop action' }
    if (($null -ne $secureBoot -or $null -ne $tpm) -and [int]$vm.Generation -ne 2) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('VM ' + $vm.Name + ' is generation 1: it has no Secure Boot or virtual TPM') -Details @{ field = 'secure_boot' }
    }
    if ($null -ne $secureBoot) { $needOff += 'Secure Boot' }
    if ($null -ne $tpm) { $needOff += 'the virtual TPM' }
    $memoryChange = ($null -ne $startup -and [int64]$startup -ne [int64]$vm.MemoryStartup) -or
        ($null -ne $minimum -and [int64]$minimum -ne [int64]$vm.MemoryMinimum) -or
        ($null -ne $maximum -and [int64]$maximum -ne [int64]$vm.MemoryMaximum)
    if (-not $off -and $needOff.Count -gt 0) {
        Stop-Aetherv -Code 'InvalidVmState' -Message (($needOff -join ', ') + ' of VM ' + $vm.Name + ' change only while it is Off; it is ' + $vm.State.ToString()) -Details $details
    }
    if (-not $off -and $memoryChange) {
        if ([int]$vm.State -ne 2 -or -not $vm.DynamicMemoryEnabled) {
            Stop-Aetherv -Code 'InvalidVmState' -Message ('the memory of VM ' + $vm.Name + ' changes only while it is Off (it is ' + $vm.State.ToString() + ' without dynamic memory running)') -Details $details
        }
        $newMin = $(if ($null -ne $minimum) { [int64]$minimum } else { [int64]$vm.MemoryMinimum })
        $newMax = $(if ($null -ne $maximum) { [int64]$maximum } else { [int64]$vm.MemoryMaximum })
        $newStartup = $(if ($null -ne $startup) { [int64]$startup } else { [int64]$vm.MemoryStartup })
        if ($newMin -gt [int64]$vm.MemoryMinimum -or $newMax -lt [int64]$vm.MemoryMaximum -or $newStartup -lt $newMin -or $newStartup -gt $newMax) {
            Stop-Aetherv -Code 'InvalidVmState' -Message ('VM ' + $vm.Name + ' is Running: its memory changes only within its dynamic range, the minimum down and the maximum up') -Details $details
        }
    }

    if ($null -ne $processors) { Hyper-V\Set-VMProcessor -VM $vm -Count ([int64]$processors) }
    if ($null -ne $dynamic -or $null -ne $startup -or $null -ne $minimum -or $null -ne $maximum) {
        $memory = @{ VM = $vm }
        if ($null -ne $dynamic) { $memory['DynamicMemoryEnabled'] = [bool]$dynamic }
        if ($null -ne $startup) { $memory['StartupBytes'] = [int64]$startup }
        if ($null -ne $minimum) { $memory['MinimumBytes'] = [int64]$minimum }
        if ($null -ne $maximum) { $memory['MaximumBytes'] = [int64]$maximum }
        Hyper-V\Set-VMMemory @memory
    }
    if ($null -ne $notes) { Hyper-V\Set-VM -VM $vm -Notes ([string]$notes) }
    if ($null -ne $startAction) { Hyper-V\Set-VM -VM $vm -AutomaticStartAction ([string]$startAction) }
    if ($null -ne $stopAction) { Hyper-V\Set-VM -VM $vm -AutomaticStopAction ([string]$stopAction) }
    if ($null -ne $startDelay) { Hyper-V\Set-VM -VM $vm -AutomaticStartDelay ([int]$startDelay) }
    if ($null -ne $secureBoot) {
        if ([bool]$secureBoot) { Hyper-V\Set-VMFirmware -VM $vm -EnableSecureBoot On } else { Hyper-V\Set-VMFirmware -VM $vm -EnableSecureBoot Off }
    }
    if ($null -ne $tpm) {
        if ([bool]$tpm) {
            Hyper-V\Set-VMKeyProtector -VM $vm -NewLocalKeyProtector
            Hyper-V\Enable-VMTPM -VM $vm
        } else {
            Hyper-V\Disable-VMTPM -VM $vm
        }
    }
    $after = Hyper-V\Get-VM -Id $vm.Id
    @(Get-AethervVmShapes -Vms @($after))[0]
}
