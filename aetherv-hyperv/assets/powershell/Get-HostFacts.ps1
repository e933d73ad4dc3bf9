# Get-HostFacts.ps1 - the host's identity, capacity, storage, switches, golden images, provisioning ISOs and installed script version.
#
# Request (stdin, JSON): {} or {"image_roots":[...],"iso_directories":[...]} (defaults: <each CSV>\DiskImages, <each CSV>\Images, <VirtualMachinePath>\Images; the install directory and its ISO folder). "image_directories" is accepted as an older name of "image_roots".
# images[]: {name, os_family, path, size_bytes, max_size_bytes, root}: an image named N is <root>\N.vhdx; a name found in several roots is listed once, from the first root.
# Result data: {name, fqdn, cluster, os_version, logical_processors, memory_total_bytes, memory_available_bytes, vm_path, vm_count, storage[], switches[], images[], provisioning_isos[], scripts_version, host_resources: {path, text}|null, maintenance: {...}|null, cluster_node_state}
# maintenance: the state file maintenance.json next to this script (Set-HostMaintenance.ps1 writes it); cluster_node_state: Get-ClusterNode's State.
# host_resources: Aether-V's hostresources.json (or .yaml/.yml) under %ProgramData%\Aether-V, read as text and parsed by the server.
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vmHost = Hyper-V\Get-VMHost
    $computer = Get-CimInstance -ClassName Win32_ComputerSystem
    $os = Get-CimInstance -ClassName Win32_OperatingSystem

    $fqdn = [string]$computer.DNSHostName
    if ($computer.PartOfDomain) { $fqdn = $fqdn + '.' + [string]$computer.Domain }

    $cluster = $null
    if ($null -ne (Get-Command -Module FailoverClusters -Name Get-Cluster -ErrorAction SilentlyContinue)) {
        try { $cluster = [string](FailoverClusters\Get-Cluster).Name } catch { $cluster = $null }
    }

    $storage = foreach ($volume in @(Get-CimInstance -ClassName Win32_Volume -Filter 'DriveType = 3')) {
        $name = [string]$volume.Name
        if ($name -notmatch '^[A-Za-z]:\\') { continue }
        [ordered]@{
            path           = $name.TrimEnd('\')
            capacity_bytes = [int64]$volume.Capacity
            free_bytes     = [int64]$volume.FreeSpace
            shared         = $name.StartsWith('C:\ClusterStorage\', [StringComparison]::OrdinalIgnoreCase)
        }
    }
    $storage = @($storage)

    $switches = @(Hyper-V\Get-VMSwitch | ForEach-Object {
        [ordered]@{ name = [string]$_.Name; switch_type = $_.SwitchType.ToString() }
    })

    $imageDirectories = @(Get-AethervField -Request $Request -Name 'image_roots' -Default @())
    if ($imageDirectories.Count -eq 0) {
        $imageDirectories = @(Get-AethervField -Request $Request -Name 'image_directories' -Default @())
    }
    if ($imageDirectories.Count -eq 0) {
        $sharedVolumes = @($storage | Where-Object { $_.shared })
        $imageDirectories = @($sharedVolumes | ForEach-Object { Join-Path -Path $_.path -ChildPath 'DiskImages' })
        $imageDirectories += @($sharedVolumes | ForEach-Object { Join-Path -Path $_.path -ChildPath 'Images' })
        $imageDirectories += (Join-Path -Path ([string]$vmHost.VirtualMachinePath) -ChildPath 'Images')
    }
    $imageRoots = @{}
    $seenNames = @{}
    $imageFiles = @(foreach ($directory in $imageDirectories) {
        if (Test-Path -LiteralPath ([string]$directory) -PathType Container) {
            foreach ($file in @(Get-ChildItem -LiteralPath ([string]$directory) -File | Where-Object { $_.Extension -eq '.vhdx' })) {
                $nameKey = $file.BaseName.ToLowerInvariant()
                if ($seenNames.ContainsKey($nameKey)) { continue }
                $seenNames[$nameKey] = $true
                $imageRoots[$file.FullName.ToLowerInvariant()] = ([string]$directory).TrimEnd('\')
                $file
            }
        }
    })
    $virtualSizes = @{}
    if ($imageFiles.Count -gt 0) {
        foreach ($vhd in @(Hyper-V\Get-VHD -Path @($imageFiles | ForEach-Object { $_.FullName }) -ErrorAction SilentlyContinue)) {
            $virtualSizes[$vhd.Path.ToLowerInvariant()] = [int64]$vhd.Size
        }
    }
    $images = @(foreach ($file in $imageFiles) {
        $key = $file.FullName.ToLowerInvariant()
        [ordered]@{
            name           = $file.BaseName
            os_family      = Get-AethervImageFamily -Name $file.BaseName
            path           = $file.FullName
            size_bytes     = [int64]$file.Length
            max_size_bytes = $(if ($virtualSizes.ContainsKey($key)) { $virtualSizes[$key] } else { $null })
            root           = $imageRoots[$key]
        }
    })

    $isoDirectories = @(Get-AethervField -Request $Request -Name 'iso_directories' -Default @())
    if ($isoDirectories.Count -eq 0) {
        $isoDirectories = @($PSScriptRoot, (Join-Path -Path $PSScriptRoot -ChildPath 'iso'))
    }
    $isos = @(foreach ($directory in $isoDirectories) {
        if (-not (Test-Path -LiteralPath ([string]$directory) -PathType Container)) { continue }
        foreach ($file in @(Get-ChildItem -LiteralPath ([string]$directory) -File | Where-Object { $_.Extension -eq '.iso' })) {
            $family = ''
            if ($file.BaseName -match 'windows') { $family = 'windows' } elseif ($file.BaseName -match 'linux') { $family = 'linux' }
            $versionFile = $file.FullName + '.version'
            $version = $null
            if (Test-Path -LiteralPath $versionFile -PathType Leaf) { $version = ([string](Get-Content -LiteralPath $versionFile -TotalCount 1)).Trim() }
            [ordered]@{ os_family = $family; path = $file.FullName; size_bytes = [int64]$file.Length; version = $version }
        }
    })

    $scriptsVersion = $null
    foreach ($candidate in @('version.txt', 'VERSION')) {
        $versionPath = Join-Path -Path $PSScriptRoot -ChildPath $candidate
        if (Test-Path -LiteralPath $versionPath -PathType Leaf) {
            $scriptsVersion = ([string](Get-Content -LiteralPath $versionPath -TotalCount 1)).Trim()
            break
        }
    }

    $hostResources = $null
    $resourcesDirectory = Join-Path -Path ([string]$env:ProgramData) -ChildPath 'Aether-V'
    foreach ($candidate in @('hostresources.json', 'hostresources.yaml', 'hostresources.yml')) {
        $resourcesPath = Join-Path -Path $resourcesDirectory -ChildPath $candidate
        if (Test-Path -LiteralPath $resourcesPath -PathType Leaf) {
            $hostResources = [ordered]@{ path = $resourcesPath; text = [System.IO.File]::ReadAllText($resourcesPath) }
            break
        }
    }

    $maintenance = $null
    $maintenancePath = Join-Path -Path $PSScriptRoot -ChildPath 'maintenance.json'
    if (Test-Path -LiteralPath $maintenancePath -PathType Leaf) {
        $maintenance = ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText($maintenancePath))
    }
    $nodeState = $null
    if ($null -ne $cluster) {
        try { $nodeState = [string](FailoverClusters\Get-ClusterNode -Name $env:COMPUTERNAME).State } catch { $nodeState = $null }
    }

    [ordered]@{
        name                   = [string]$env:COMPUTERNAME
        fqdn                   = $fqdn
        cluster                = $cluster
        os_version             = [string]$os.Version
        logical_processors     = [int]$vmHost.LogicalProcessorCount
        memory_total_bytes     = [int64]$computer.TotalPhysicalMemory
        memory_available_bytes = [int64]$os.FreePhysicalMemory * 1024
        vm_path                = [string]$vmHost.VirtualMachinePath
        vm_count               = @(Hyper-V\Get-VM).Count
        storage                = $storage
        switches               = $switches
        images                 = $images
        provisioning_isos      = $isos
        scripts_version        = $scriptsVersion
        host_resources         = $hostResources
        maintenance            = $maintenance
        cluster_node_state     = $nodeState
    }
}
