# AethervCommon.ps1 - helpers dot-sourced by every aetherv host script.
#
# Contract (see aetherv-hyperv/src/protocol.rs and src/ops.rs): a script reads one JSON
# request from stdin and writes exactly one result document between the marker lines:
#   {"ok":true,"data":...}  or  {"ok":false,"error":{"code":"...","message":"...","details":{...}}}
# Request values are only ever used as parameter values, never as script text.
# Windows PowerShell 5.1 compatible.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

# Extended type data on System.Array (added by some modules) makes Windows PowerShell 5.1's
# ConvertTo-Json write arrays as {"value":[...],"Count":n}; drop it for this process.
try { Remove-TypeData -TypeName System.Array -ErrorAction Stop } catch { $null = $_ }

$script:AethervResultBegin = '===AETHERV-RESULT-BEGIN==='
$script:AethervResultEnd = '===AETHERV-RESULT-END==='

function Stop-Aetherv {
    # Throws an error that Invoke-AethervScript reports with this code and details.
    param(
        [Parameter(Mandatory = $true)][string]$Code,
        [Parameter(Mandatory = $true)][string]$Message,
        [hashtable]$Details = @{}
    )
    $exception = New-Object -TypeName System.Exception -ArgumentList $Message
    $exception.Data['AethervCode'] = $Code
    $exception.Data['AethervDetails'] = $Details
    throw $exception
}

function Write-AethervDocument {
    param([Parameter(Mandatory = $true)]$Document)
    $json = ConvertTo-Json -InputObject $Document -Depth 8 -Compress
    [Console]::Out.Write($script:AethervResultBegin + "`r`n" + $json + "`r`n" + $script:AethervResultEnd + "`r`n")
}

function Format-AethervDate {
    # ISO 8601 UTC with an invariant culture (':' is culture-dependent in .NET formats).
    param([DateTime]$Date)
    return $Date.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [System.Globalization.CultureInfo]::InvariantCulture)
}

function Get-AethervField {
    # A request property, or $Default when it is missing or null (StrictMode-safe).
    param($Request, [string]$Name, $Default = $null)
    if ($null -eq $Request) { return $Default }
    $property = $Request.PSObject.Properties[$Name]
    if ($null -eq $property -or $null -eq $property.Value) { return $Default }
    return $property.Value
}

function Get-AethervRequiredField {
    param($Request, [string]$Name)
    $value = Get-AethervField -Request $Request -Name $Name
    if ($null -eq $value -or ($value -is [string] -and $value.Length -eq 0)) {
        Stop-Aetherv -Code 'InvalidRequest' -Message "the request has no '$Name'" -Details @{ field = $Name }
    }
    return $value
}

function Invoke-AethervScript {
    # Reads the request, runs $Body with it and writes the one result document.
    param([Parameter(Mandatory = $true)][scriptblock]$Body)
    $exitCode = 0
    try {
        $raw = [Console]::In.ReadToEnd()
        if ([string]::IsNullOrWhiteSpace($raw)) {
            $request = New-Object -TypeName PSObject
        } else {
            try {
                $request = ConvertFrom-Json -InputObject $raw
            } catch {
                Stop-Aetherv -Code 'InvalidRequest' -Message ('the request on stdin is not one JSON document: ' + $_.Exception.Message)
            }
        }
        $data = & $Body $request
        Write-AethervDocument -Document ([ordered]@{ ok = $true; data = $data })
    } catch {
        $exitCode = 1
        $exception = $_.Exception
        $code = 'HostError'
        $details = @{}
        if ($null -ne $exception -and $exception.Data.Contains('AethervCode')) {
            $code = [string]$exception.Data['AethervCode']
            $details = $exception.Data['AethervDetails']
        } else {
            $details = @{ error_id = [string]$_.FullyQualifiedErrorId; category = [string]$_.CategoryInfo.Category }
        }
        $message = 'unknown error'
        if ($null -ne $exception) { $message = $exception.Message }
        Write-AethervDocument -Document ([ordered]@{
            ok    = $false
            error = [ordered]@{ code = $code; message = $message; details = $details }
        })
    }
    exit $exitCode
}

function ConvertTo-AethervGuid {
    param($Value)
    $guid = [Guid]::Empty
    if (-not [Guid]::TryParse([string]$Value, [ref]$guid)) {
        Stop-Aetherv -Code 'InvalidRequest' -Message 'the VM id is not a GUID' -Details @{ field = 'id' }
    }
    return $guid
}

function Get-AethervVm {
    # The VM with the request's id; fails with VmNotFound.
    param($Id)
    $guid = ConvertTo-AethervGuid -Value $Id
    $vm = Hyper-V\Get-VM -Id $guid -ErrorAction SilentlyContinue
    if ($null -eq $vm) {
        Stop-Aetherv -Code 'VmNotFound' -Message ('no VM with id ' + $guid.ToString() + ' on host ' + $env:COMPUTERNAME) -Details @{ vm = $guid.ToString() }
    }
    return $vm
}

function Get-AethervVmByName {
    # The VM with exactly this name (no wildcard expansion), or $null.
    param([string]$Name)
    return @(Hyper-V\Get-VM | Where-Object { $_.Name -eq $Name }) | Select-Object -First 1
}

function Get-AethervStateDetails {
    param($Vm)
    return @{ vm = $Vm.Id.ToString(); name = $Vm.Name; state = [int]$Vm.State; state_name = $Vm.State.ToString() }
}

function Get-AethervFreeMemoryBytes {
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    return [int64]$os.FreePhysicalMemory * 1024
}

function Assert-AethervMemoryForStart {
    param($Vm)
    $available = Get-AethervFreeMemoryBytes
    $required = [int64]$Vm.MemoryStartup
    if ($required -gt $available) {
        Stop-Aetherv -Code 'InsufficientMemory' -Message ('not enough memory to start ' + $Vm.Name) -Details @{
            vm = $Vm.Id.ToString(); required_bytes = $required; available_bytes = $available
        }
    }
}

function Get-AethervVolumeFor {
    # The fixed volume (or CSV mount point) that contains $Path: the longest matching root.
    param([string]$Path)
    $best = $null
    foreach ($volume in @(Get-CimInstance -ClassName Win32_Volume -Filter 'DriveType = 3')) {
        $root = [string]$volume.Name
        if ($root.Length -gt 0 -and $Path.StartsWith($root, [StringComparison]::OrdinalIgnoreCase)) {
            if ($null -eq $best -or $root.Length -gt ([string]$best.Name).Length) { $best = $volume }
        }
    }
    return $best
}

function Assert-AethervFreeSpace {
    param([string]$Path, [int64]$Required)
    $volume = Get-AethervVolumeFor -Path $Path
    if ($null -ne $volume -and [int64]$volume.FreeSpace -lt $Required) {
        Stop-Aetherv -Code 'InsufficientStorage' -Message ('not enough free space for ' + $Path) -Details @{
            location = [string]$volume.Name; required_bytes = $Required; available_bytes = [int64]$volume.FreeSpace
        }
    }
}

function Test-AethervPathUnder {
    param([string]$Path, [string]$Root)
    $full = [System.IO.Path]::GetFullPath($Path).TrimEnd('\')
    $base = [System.IO.Path]::GetFullPath($Root).TrimEnd('\') + '\'
    return $full.StartsWith($base, [StringComparison]::OrdinalIgnoreCase) -and $full.Length -gt $base.Length
}

function Test-AethervRemovablePath {
    # Whether compensation and deletion may remove $Path: strictly below the host's VM folder
    # root, or strictly inside a Cluster Shared Volume (where storage classes put VM folders),
    # never a volume itself.
    param([string]$Path, [string]$VmRoot)
    if (Test-AethervPathUnder -Path $Path -Root $VmRoot) { return $true }
    $csvRoot = Join-Path -Path $env:SystemDrive -ChildPath 'ClusterStorage'
    if (-not (Test-AethervPathUnder -Path $Path -Root $csvRoot)) { return $false }
    $base = [System.IO.Path]::GetFullPath($csvRoot).TrimEnd('\')
    $rest = [System.IO.Path]::GetFullPath($Path).TrimEnd('\').Substring($base.Length + 1)
    return @($rest.Split('\') | Where-Object { $_.Length -gt 0 }).Count -ge 2
}

function Get-AethervVmShapes {
    # The flat inventory shape of each VM in $Vms, with batched device queries (one call per
    # device kind for all VMs, one Get-VHD for all disks).
    param([object[]]$Vms)
    $shapes = New-Object -TypeName System.Collections.ArrayList
    if ($null -eq $Vms -or $Vms.Count -eq 0) { return ,$shapes.ToArray() }

    $disks = @(Hyper-V\Get-VMHardDiskDrive -VM $Vms)
    $dvds = @(Hyper-V\Get-VMDvdDrive -VM $Vms)
    $nics = @(Hyper-V\Get-VMNetworkAdapter -VM $Vms)
    $services = @(Hyper-V\Get-VMIntegrationService -VM $Vms)
    # Firmware and vTPM exist on generation 2 VMs only (the cmdlets refuse generation 1).
    $firmwares = @{}
    $securities = @{}
    $gen2 = @($Vms | Where-Object { [int]$_.Generation -eq 2 })
    if ($gen2.Count -gt 0) {
        foreach ($f in @(Hyper-V\Get-VMFirmware -VM $gen2)) { $firmwares[$f.VMId.ToString()] = $f }
        foreach ($g in $gen2) {
            $security = Hyper-V\Get-VMSecurity -VM $g -ErrorAction SilentlyContinue
            if ($null -ne $security) { $securities[$g.Id.ToString()] = $security }
        }
    }
    $snapshots = @(Hyper-V\Get-VMSnapshot -VM $Vms)

    $vhds = @{}
    $paths = @($disks | Where-Object { $null -ne $_.Path -and $_.Path.Length -gt 0 } | ForEach-Object { [string]$_.Path } | Select-Object -Unique)
    if ($paths.Count -gt 0) {
        foreach ($vhd in @(Hyper-V\Get-VHD -Path $paths -ErrorAction SilentlyContinue)) {
            $vhds[$vhd.Path.ToLowerInvariant()] = $vhd
        }
    }

    foreach ($vm in $Vms) {
        $id = $vm.Id
        $vmDisks = foreach ($d in $disks) {
            if ($d.VMId -ne $id) { continue }
            $vhd = $null
            if ($null -ne $d.Path -and $vhds.ContainsKey(([string]$d.Path).ToLowerInvariant())) { $vhd = $vhds[([string]$d.Path).ToLowerInvariant()] }
            [ordered]@{
                path                = [string]$d.Path
                controller_type     = $d.ControllerType.ToString()
                controller_number   = [int]$d.ControllerNumber
                controller_location = [int]$d.ControllerLocation
                disk_type           = $(if ($null -ne $vhd) { $vhd.VhdType.ToString() } else { 'Unknown' })
                max_size_bytes      = $(if ($null -ne $vhd) { [int64]$vhd.Size } else { [int64]0 })
                file_size_bytes     = $(if ($null -ne $vhd) { [int64]$vhd.FileSize } else { [int64]0 })
                shared              = [bool](($null -ne $d.PSObject.Properties['SupportPersistentReservations'] -and $d.SupportPersistentReservations) -or ([string]$d.Path).EndsWith('.vhds', [StringComparison]::OrdinalIgnoreCase))
            }
        }
        $vmDvds = foreach ($d in $dvds) {
            if ($d.VMId -ne $id) { continue }
            [ordered]@{
                path                = $(if ([string]::IsNullOrEmpty($d.Path)) { $null } else { [string]$d.Path })
                controller_type     = $d.ControllerType.ToString()
                controller_number   = [int]$d.ControllerNumber
                controller_location = [int]$d.ControllerLocation
            }
        }
        $vmNics = foreach ($n in $nics) {
            if ($n.VMId -ne $id) { continue }
            ConvertTo-AethervNicShape -Adapter $n
        }
        $vmServices = foreach ($s in $services) {
            if ($s.VMId -ne $id) { continue }
            [ordered]@{ name = [string]$s.Name; enabled = [bool]$s.Enabled }
        }
        $vmCheckpoints = foreach ($c in $snapshots) {
            if ($c.VMId -ne $id) { continue }
            ConvertTo-AethervCheckpointShape -Snapshot $c
        }
        $created = $null
        if ($null -ne $vm.CreationTime) { $created = Format-AethervDate -Date $vm.CreationTime }
        $secureBoot = $null
        $template = $null
        $tpm = $null
        $key = $id.ToString()
        if ($firmwares.ContainsKey($key)) {
            $secureBoot = ($firmwares[$key].SecureBoot.ToString() -eq 'On')
            $template = [string]$firmwares[$key].SecureBootTemplate
        }
        if ($securities.ContainsKey($key)) { $tpm = [bool]$securities[$key].TpmEnabled }
        [void]$shapes.Add([ordered]@{
            id                    = $id.ToString()
            name                  = [string]$vm.Name
            state                 = [int]$vm.State
            state_name            = $vm.State.ToString()
            generation            = [int]$vm.Generation
            version               = [string]$vm.Version
            path                  = [string]$vm.Path
            processor_count       = [int]$vm.ProcessorCount
            memory_startup_bytes  = [int64]$vm.MemoryStartup
            memory_assigned_bytes = [int64]$vm.MemoryAssigned
            memory_minimum_bytes  = [int64]$vm.MemoryMinimum
            memory_maximum_bytes  = [int64]$vm.MemoryMaximum
            dynamic_memory        = [bool]$vm.DynamicMemoryEnabled
            uptime_seconds        = [int64]$vm.Uptime.TotalSeconds
            creation_time         = $created
            notes                 = [string]$vm.Notes
            clustered             = [bool]$vm.IsClustered
            disks                 = @($vmDisks)
            dvd_drives            = @($vmDvds)
            network_adapters      = @($vmNics)
            integration_services  = @($vmServices)
            secure_boot           = $secureBoot
            secure_boot_template  = $template
            tpm_enabled           = $tpm
            automatic_start_action = $vm.AutomaticStartAction.ToString()
            automatic_stop_action = $vm.AutomaticStopAction.ToString()
            automatic_start_delay_seconds = [int]$vm.AutomaticStartDelay
            checkpoints           = @($vmCheckpoints)
            merge_percent         = Get-AethervMergePercent -Vm $vm
        })
    }
    return ,$shapes.ToArray()
}

function ConvertTo-AethervNicShape {
    # The inventory shape of one network adapter (Get-VMNetworkAdapter output).
    param($Adapter)
    $vlan = $null
    $vlanSetting = $null
    if ($null -ne $Adapter.PSObject.Properties['VlanSetting']) { $vlanSetting = $Adapter.VlanSetting }
    if ($null -ne $vlanSetting -and $vlanSetting.OperationMode.ToString() -eq 'Access' -and $vlanSetting.AccessVlanId -gt 0) {
        $vlan = [int]$vlanSetting.AccessVlanId
    }
    $maximum = [int64]0
    $minimum = [int64]0
    $bandwidth = $null
    if ($null -ne $Adapter.PSObject.Properties['BandwidthSetting']) { $bandwidth = $Adapter.BandwidthSetting }
    if ($null -ne $bandwidth) {
        if ($null -ne $bandwidth.MaximumBandwidth) { $maximum = [int64]$bandwidth.MaximumBandwidth }
        if ($null -ne $bandwidth.MinimumBandwidthAbsolute) { $minimum = [int64]$bandwidth.MinimumBandwidthAbsolute }
    }
    return [ordered]@{
        name                  = [string]$Adapter.Name
        switch_name           = $(if ([string]::IsNullOrEmpty($Adapter.SwitchName)) { $null } else { [string]$Adapter.SwitchName })
        vlan_id               = $vlan
        mac_address           = [string]$Adapter.MacAddress
        ip_addresses          = @($Adapter.IPAddresses | ForEach-Object { [string]$_ })
        id                    = [string]$Adapter.Id
        dynamic_mac           = [bool]$Adapter.DynamicMacAddressEnabled
        mac_spoofing          = ([string]$Adapter.MacAddressSpoofing -eq 'On')
        dhcp_guard            = ([string]$Adapter.DhcpGuard -eq 'On')
        router_guard          = ([string]$Adapter.RouterGuard -eq 'On')
        maximum_bandwidth_bps = $maximum
        minimum_bandwidth_bps = $minimum
        legacy                = [bool]$Adapter.IsLegacy
    }
}

function ConvertTo-AethervCheckpointShape {
    # The inventory shape of one checkpoint (Get-VMSnapshot output).
    param($Snapshot)
    $parent = $null
    if ($null -ne $Snapshot.ParentSnapshotId) { $parent = [string]$Snapshot.ParentSnapshotId }
    $created = $null
    if ($null -ne $Snapshot.CreationTime) { $created = Format-AethervDate -Date $Snapshot.CreationTime }
    return [ordered]@{
        id            = [string]$Snapshot.Id
        name          = [string]$Snapshot.Name
        parent_id     = $parent
        creation_time = $created
        snapshot_type = [string]$Snapshot.SnapshotType
        vm_state      = [int]$Snapshot.State
    }
}

function Get-AethervMergePercent {
    # While Hyper-V merges a VM's differencing disks: the percentage its status shows (0 when
    # it shows none); otherwise $null.
    param($Vm)
    $statuses = @($Vm.OperationalStatus | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
    if ($statuses -notcontains 'MergingDisks') { return $null }
    $percent = 0
    if ([string]$Vm.Status -match '(\d{1,3})\s*%') { $percent = [Math]::Min(100, [int]$Matches[1]) }
    return $percent
}

function Get-AethervKvpComputerSystem {
    # The Msvm_ComputerSystem of a VM (filtered in PowerShell, not in WQL text).
    param($Vm)
    $name = $Vm.Id.ToString()
    $system = @(Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_ComputerSystem' |
        Where-Object { $_.Name -eq $name }) | Select-Object -First 1
    if ($null -eq $system) {
        Stop-Aetherv -Code 'VmNotFound' -Message ('no Msvm_ComputerSystem for VM ' + $name) -Details @{ vm = $name }
    }
    return $system
}

function ConvertFrom-AethervKvpXml {
    # Name/Data pairs of embedded Msvm_KvpExchangeDataItem instances (CIM-XML strings).
    param([object[]]$Items)
    $result = [ordered]@{}
    foreach ($item in @($Items)) {
        if ($null -eq $item) { continue }
        $xml = New-Object -TypeName System.Xml.XmlDocument
        $xml.LoadXml([string]$item)
        $nameNode = $xml.SelectSingleNode("/INSTANCE/PROPERTY[@NAME='Name']/VALUE")
        $dataNode = $xml.SelectSingleNode("/INSTANCE/PROPERTY[@NAME='Data']/VALUE")
        if ($null -ne $nameNode) {
            $data = ''
            if ($null -ne $dataNode) { $data = $dataNode.InnerText }
            $result[$nameNode.InnerText] = $data
        }
    }
    return $result
}

function ConvertTo-AethervKvpXml {
    # One Msvm_KvpExchangeDataItem (pool 0, host to guest) as the embedded-instance text the
    # Add/Modify/RemoveKvpItems methods take.
    param([string]$Name, [string]$Data)
    $class = Get-CimClass -Namespace 'root\virtualization\v2' -ClassName 'Msvm_KvpExchangeDataItem'
    $instance = New-CimInstance -CimClass $class -ClientOnly -Property @{ Name = $Name; Data = $Data; Source = [uint16]0 }
    $serializer = [Microsoft.Management.Infrastructure.Serialization.CimSerializer]::Create()
    $bytes = $serializer.Serialize($instance, [Microsoft.Management.Infrastructure.Serialization.InstanceSerializationOptions]::None)
    return [System.Text.Encoding]::Unicode.GetString($bytes)
}

function Wait-AethervCimJob {
    # Waits for a Msvm method result: 0 done, 4096 job started (poll it), anything else fails.
    param($Result, [string]$What)
    $code = [int]$Result.ReturnValue
    if ($code -eq 0) { return }
    if ($code -ne 4096) {
        Stop-Aetherv -Code 'WmiMethodFailed' -Message ($What + ' failed with return value ' + $code) -Details @{ return_value = $code }
    }
    $job = Get-CimInstance -InputObject $Result.Job
    $deadline = [DateTime]::UtcNow.AddSeconds(60)
    while ($job.JobState -eq 3 -or $job.JobState -eq 4) {
        if ([DateTime]::UtcNow -gt $deadline) {
            Stop-Aetherv -Code 'Timeout' -Message ($What + ' did not finish within 60 seconds')
        }
        Start-Sleep -Milliseconds 100
        $job = Get-CimInstance -InputObject $job
    }
    if ($job.JobState -ne 7) {
        Stop-Aetherv -Code 'WmiJobFailed' -Message ($What + ' failed: ' + [string]$job.ErrorDescription) -Details @{ job_state = [int]$job.JobState; error_code = [int]$job.ErrorCode }
    }
}

function Get-AethervImageFamily {
    param([string]$Name)
    $lower = $Name.Trim().ToLowerInvariant()
    if ($lower.StartsWith('windows') -or $lower.StartsWith('microsoft windows')) { return 'windows' }
    foreach ($prefix in @('ubuntu', 'rhel', 'centos', 'rocky linux', 'almalinux', 'oracle linux', 'debian', 'suse', 'opensuse', 'fedora')) {
        if ($lower.StartsWith($prefix)) { return 'linux' }
    }
    return ''
}

function Get-AethervMigrationJob {
    # The VM's newest migration job (Msvm_MigrationJob, kept by the host for five minutes
    # after it ends), running ones first; $null when there is none.
    param([Guid]$VmId)
    $name = $VmId.ToString()
    $jobs = @(Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_MigrationJob' |
        Where-Object { [string]$_.VirtualSystemName -eq $name })
    if ($jobs.Count -eq 0) { return $null }
    $running = @($jobs | Where-Object { Test-AethervJobActive -JobState $_.JobState })
    if ($running.Count -gt 0) { return $running[0] }
    return @($jobs | Sort-Object -Property TimeOfLastStateChange -Descending)[0]
}

function Test-AethervJobActive {
    # CIM_ConcreteJob.JobState: 2 New, 3 Starting, 4 Running, 5 Suspended, 6 Shutting Down.
    param($JobState)
    $state = [int]$JobState
    return $state -ge 2 -and $state -le 6
}

function Get-AethervInventoryDigest {
    # SHA-256 (lowercase hex) of a host's VM set: every shape of $Shapes, ordered by id, as
    # compact JSON, with a running VM's uptime replaced by the ten-minute slot it started in
    # (from the precise Uptime of $Vms), so uptime that only advances keeps the digest and a
    # restart changes it.
    param([object[]]$Shapes, [object[]]$Vms, [DateTime]$Now)
    $started = @{}
    foreach ($vm in @($Vms)) {
        if ($null -ne $vm -and $vm.Uptime.Ticks -gt 0) {
            $boot = $Now.Ticks - $vm.Uptime.Ticks
            $started[$vm.VMId.ToString()] = [int64][Math]::Floor($boot / 6000000000.0)
        }
    }
    $stable = New-Object -TypeName System.Collections.ArrayList
    foreach ($shape in @($Shapes | Sort-Object -Property { $_['id'] })) {
        $copy = [ordered]@{}
        foreach ($key in $shape.Keys) { $copy[$key] = $shape[$key] }
        $copy['uptime_seconds'] = 0
        $slot = 0
        if ($started.ContainsKey([string]$shape['id'])) { $slot = $started[[string]$shape['id']] }
        $copy['started_slot'] = $slot
        [void]$stable.Add($copy)
    }
    $json = ConvertTo-Json -InputObject @($stable.ToArray()) -Depth 8 -Compress
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try {
        $hash = $sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($json))
    } finally {
        $sha.Dispose()
    }
    -join @($hash | ForEach-Object { $_.ToString('x2') })
}
