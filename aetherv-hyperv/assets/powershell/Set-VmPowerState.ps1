# Set-VmPowerState.ps1 - applies a power action after re-checking the allowed states.
#
# Request (stdin, JSON): {"id":"<guid>","action":"start|shutdown|turn_off|restart|save|pause|resume"}
# Result data: {id, name, previous_state, previous_state_name, state, state_name}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

# Allowed states (VMState numbers: Running 2, Off 3, Saved 6, Paused 9; >= 32768 and 4, 10, 11
# transitional). Keep in step with PowerAction in src/ops/types.rs.
$allowed = @{
    start    = @(3, 6)
    shutdown = @(2)
    turn_off = @(2, 9, 6)
    restart  = @(2)
    save     = @(2, 9)
    pause    = @(2)
    resume   = @(9)
}

Invoke-AethervScript -Body {
    param($Request)
    $action = [string](Get-AethervRequiredField -Request $Request -Name 'action')
    if (-not $allowed.ContainsKey($action)) {
        Stop-Aetherv -Code 'InvalidRequest' -Message ('unknown power action ' + $action) -Details @{ field = 'action' }
    }
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $before = [int]$vm.State
    $transitional = ($before -ge 32768 -and $before -ne 32779 -and $before -ne 32783) -or @(4, 10, 11) -contains $before
    $permitted = $allowed[$action] -contains $before
    if ($action -eq 'turn_off' -and $transitional) { $permitted = $true }
    if (-not $permitted) {
        Stop-Aetherv -Code 'InvalidVmState' -Message ('VM ' + $vm.Name + ' is ' + $vm.State.ToString() + '; cannot ' + $action) -Details (Get-AethervStateDetails -Vm $vm)
    }
    switch ($action) {
        'start' {
            Assert-AethervMemoryForStart -Vm $vm
            Hyper-V\Start-VM -VM $vm
        }
        'shutdown' {
            # Integration service names are localized; only an English name found disabled is
            # refused here, Stop-VM reports the other cases itself.
            $shutdown = @(Hyper-V\Get-VMIntegrationService -VM $vm | Where-Object { $_.Name -eq 'Shutdown' -or $_.Name -eq 'Guest Shutdown' }) | Select-Object -First 1
            if ($null -ne $shutdown -and -not $shutdown.Enabled) {
                Stop-Aetherv -Code 'GuestShutdownUnavailable' -Message ('the Shutdown integration service of ' + $vm.Name + ' is not enabled; turn the VM off instead') -Details (Get-AethervStateDetails -Vm $vm)
            }
            Hyper-V\Stop-VM -VM $vm -Force
        }
        'turn_off' {
            if ($before -eq 6) {
                Hyper-V\Remove-VMSavedState -VM $vm
            } else {
                Hyper-V\Stop-VM -VM $vm -TurnOff -Force
            }
        }
        'restart' { Hyper-V\Restart-VM -VM $vm -Force }
        'save' { Hyper-V\Save-VM -VM $vm }
        'pause' { Hyper-V\Suspend-VM -VM $vm }
        'resume' { Hyper-V\Resume-VM -VM $vm }
    }
    $after = Hyper-V\Get-VM -Id $vm.Id
    [ordered]@{
        id                  = $vm.Id.ToString()
        name                = [string]$vm.Name
        previous_state      = $before
        previous_state_name = $vm.State.ToString()
        state               = [int]$after.State
        state_name          = $after.State.ToString()
    }
}
