# AethervAgent.ps1 - the Aether-V Windows provisioning agent: the guest half of the KVP
# provisioning handshake (hlvmm.*), then the configuration it carries.
#
# Runs as SYSTEM from the scheduled task 'Aether-V Provisioning Agent' (see
# Install-AethervAgent.ps1). Windows PowerShell 5.1.
#
# KVP on a Windows guest is the registry (Hyper-V Data Exchange integration service):
#   HKLM\SOFTWARE\Microsoft\Virtual Machine\External  items the host sent (host -> guest)
#   HKLM\SOFTWARE\Microsoft\Virtual Machine\Guest     items the guest publishes (guest -> host)
#
# Protocol (as aetherv-kvp implements it):
#   1. host: hlvmm.meta.version and hlvmm.meta.host_provisioning_system_state=waitingforpublickey.
#      The agent checks the version against its own (the ISO's version file), makes an RSA-2048
#      key and publishes it as base64 of a CAPI PUBLICKEYBLOB (ExportCspBlob($false)) in
#      hlvmm.meta.guest_provisioning_public_key, state waitingforaeskey.
#   2. host: hlvmm.meta.shared_aes_key (AES-256 key, RSA PKCS#1 v1.5), hlvmm.data.<name> values
#      (base64 of IV + AES-256-CBC/PKCS#7; values over 100 characters as pieces <name>._0, ._1,
#      each encrypted on its own), hlvmm.meta.provisioning_system_checksum (base64 SHA-256 of
#      the non-blank values ordered by name, joined with '|'), then state
#      provisioningdatapublished.
#   3. guest: applying, then provisioningapplied, or provisioningfailed with
#      hlvmm.meta.guest_provisioning_error (at most 200 characters, never a value).
#
# Secrets (passwords) live only in memory: they are never written to disk, to the log or to
# KVP. The log file holds states and step names only.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$AgentDirectory = Join-Path -Path ([string]$env:ProgramData) -ChildPath 'Aether-V\Agent'
$LogPath = Join-Path -Path $AgentDirectory -ChildPath 'agent.log'
$TaskName = 'Aether-V Provisioning Agent'
$ExternalKey = 'SOFTWARE\Microsoft\Virtual Machine\External'
$GuestKey = 'SOFTWARE\Microsoft\Virtual Machine\Guest'
$PollSeconds = 5
$MaxErrorChars = 200

function Write-AgentLog {
    param([string]$Message)
    $line = '{0} {1}' -f [DateTime]::UtcNow.ToString('o'), $Message
    Add-Content -LiteralPath $LogPath -Value $line -Encoding UTF8
}

function Read-HostItems {
    # The host's items (hlvmm.* only), by key.
    $items = @{}
    $key = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($ExternalKey)
    if ($null -eq $key) { return $items }
    try {
        foreach ($name in $key.GetValueNames()) {
            if ($name.StartsWith('hlvmm.', [StringComparison]::Ordinal)) {
                $items[$name] = ([string]$key.GetValue($name)).Trim([char[]]@([char]0, ' ', "`t", "`r", "`n"))
            }
        }
    } finally {
        $key.Close()
    }
    return $items
}

function Write-GuestItem {
    param([string]$Name, [string]$Value)
    $key = [Microsoft.Win32.Registry]::LocalMachine.CreateSubKey($GuestKey)
    try {
        $key.SetValue($Name, $Value, [Microsoft.Win32.RegistryValueKind]::String)
    } finally {
        $key.Close()
    }
}

function Remove-GuestItem {
    param([string]$Name)
    $key = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($GuestKey, $true)
    if ($null -eq $key) { return }
    try {
        $key.DeleteValue($Name, $false)
    } finally {
        $key.Close()
    }
}

function Set-GuestState {
    param([string]$State)
    Write-GuestItem -Name 'hlvmm.meta.guest_provisioning_system_state' -Value $State
    Write-AgentLog -Message "state $State"
}

function Get-ErrorText {
    # Control characters become spaces; at most 200 characters.
    param([string]$Reason)
    $clean = -join ($Reason.ToCharArray() | ForEach-Object { if ([char]::IsControl($_)) { ' ' } else { $_ } })
    if ($clean.Length -gt $MaxErrorChars) { $clean = $clean.Substring(0, $MaxErrorChars) }
    return $clean
}

function Set-GuestFailed {
    param([string]$Reason)
    $text = Get-ErrorText -Reason $Reason
    Write-GuestItem -Name 'hlvmm.meta.guest_provisioning_error' -Value $text
    Set-GuestState -State 'provisioningfailed'
    Write-AgentLog -Message "failed: $text"
}

function ConvertFrom-Base64Item {
    param([string]$Name, [string]$Value)
    try {
        return [Convert]::FromBase64String($Value)
    } catch {
        throw "$Name is not base64"
    }
}

function Unprotect-AesKey {
    # Unwraps the host's AES-256 key (RSA PKCS#1 v1.5, fOAEP = false).
    param($Rsa, [string]$Wrapped)
    $bytes = ConvertFrom-Base64Item -Name 'hlvmm.meta.shared_aes_key' -Value $Wrapped
    try {
        $key = $Rsa.Decrypt($bytes, $false)
    } catch {
        throw 'hlvmm.meta.shared_aes_key does not unwrap with this guest key'
    }
    if ($key.Length -ne 32) {
        throw ('the unwrapped AES key has {0} bytes, expected 32' -f $key.Length)
    }
    return , $key
}

function Unprotect-Piece {
    # base64(IV 16 bytes + AES-256-CBC/PKCS#7 ciphertext) -> UTF-8 text.
    param([byte[]]$AesKey, [string]$Name, [string]$Value)
    $bytes = ConvertFrom-Base64Item -Name $Name -Value $Value
    if ($bytes.Length -lt 32 -or ($bytes.Length % 16) -ne 0) {
        throw "$Name is not an IV followed by whole AES blocks"
    }
    $aes = New-Object System.Security.Cryptography.AesManaged
    try {
        $aes.Mode = [System.Security.Cryptography.CipherMode]::CBC
        $aes.Padding = [System.Security.Cryptography.PaddingMode]::PKCS7
        $aes.KeySize = 256
        $aes.Key = $AesKey
        $iv = New-Object byte[] 16
        [Array]::Copy($bytes, 0, $iv, 0, 16)
        $aes.IV = $iv
        $decryptor = $aes.CreateDecryptor()
        try {
            $plain = $decryptor.TransformFinalBlock($bytes, 16, $bytes.Length - 16)
        } catch {
            throw "$Name does not decrypt with the shared key"
        } finally {
            $decryptor.Dispose()
        }
        return [System.Text.Encoding]::UTF8.GetString($plain)
    } finally {
        $aes.Dispose()
    }
}

function Get-PayloadChecksum {
    # base64(SHA-256(non-blank values ordered by name (ordinal), joined with '|')).
    param([hashtable]$Values)
    $names = [string[]]@($Values.Keys | Where-Object { -not [string]::IsNullOrWhiteSpace([string]$Values[$_]) })
    [Array]::Sort($names, [StringComparer]::Ordinal)
    $joined = ($names | ForEach-Object { [string]$Values[$_] }) -join '|'
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try {
        return [Convert]::ToBase64String($sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($joined)))
    } finally {
        $sha.Dispose()
    }
}

function Get-Payload {
    # Unwraps the AES key, decrypts every hlvmm.data.* item, reassembles pieces, verifies the
    # checksum. Returns the plaintext values by data name (kept in memory only).
    param($Rsa, [hashtable]$Items)
    if (-not $Items.ContainsKey('hlvmm.meta.shared_aes_key')) { throw 'hlvmm.meta.shared_aes_key is missing' }
    if (-not $Items.ContainsKey('hlvmm.meta.provisioning_system_checksum')) { throw 'hlvmm.meta.provisioning_system_checksum is missing' }
    $aesKey = Unprotect-AesKey -Rsa $Rsa -Wrapped $Items['hlvmm.meta.shared_aes_key']
    try {
        $whole = @{}
        $pieces = @{}
        foreach ($itemKey in @($Items.Keys)) {
            if (-not $itemKey.StartsWith('hlvmm.data.', [StringComparison]::Ordinal)) { continue }
            $name = $itemKey.Substring('hlvmm.data.'.Length)
            if ($name -match '^(.+)\._([0-9]+)$') {
                $base = $Matches[1]
                $index = [int]$Matches[2]
                if (-not $pieces.ContainsKey($base)) { $pieces[$base] = @{} }
                $pieces[$base][$index] = $itemKey
            } else {
                $whole[$name] = $itemKey
            }
        }
        $values = @{}
        foreach ($name in @($whole.Keys)) {
            if ($pieces.ContainsKey($name)) { throw "hlvmm.data.$name is published both whole and in chunks" }
            $values[$name] = Unprotect-Piece -AesKey $aesKey -Name $whole[$name] -Value $Items[$whole[$name]]
        }
        foreach ($name in @($pieces.Keys)) {
            $parts = $pieces[$name]
            if ($parts.Count -gt 30) { throw ('hlvmm.data.{0} has {1} chunks, at most 30 are allowed' -f $name, $parts.Count) }
            $builder = New-Object System.Text.StringBuilder
            for ($i = 0; $i -lt $parts.Count; $i++) {
                if (-not $parts.ContainsKey($i)) { throw "chunk $i of hlvmm.data.$name is missing" }
                $null = $builder.Append((Unprotect-Piece -AesKey $aesKey -Name $parts[$i] -Value $Items[$parts[$i]]))
            }
            $values[$name] = $builder.ToString()
        }
    } finally {
        [Array]::Clear($aesKey, 0, $aesKey.Length)
    }
    $expected = [string]$Items['hlvmm.meta.provisioning_system_checksum']
    if ((Get-PayloadChecksum -Values $values) -ne $expected.Trim()) {
        throw 'checksum mismatch: the decrypted values do not match the published checksum'
    }
    if ($values.Count -eq 0) { throw 'no hlvmm.data items were published' }
    return $values
}

function ConvertTo-Secure {
    # A SecureString built in memory from a plaintext value (never written anywhere).
    param([string]$Text)
    $secure = New-Object System.Security.SecureString
    foreach ($c in $Text.ToCharArray()) { $secure.AppendChar($c) }
    $secure.MakeReadOnly()
    return $secure
}

function Get-Value {
    param([hashtable]$Values, [string]$Name)
    if ($Values.ContainsKey($Name) -and -not [string]::IsNullOrWhiteSpace([string]$Values[$Name])) {
        return ([string]$Values[$Name]).Trim()
    }
    return $null
}

function Set-LocalAdministrator {
    param([hashtable]$Values)
    $password = Get-Value -Values $Values -Name 'guest_la_pw'
    if ($null -eq $password) { return }
    $user = Get-Value -Values $Values -Name 'guest_la_uid'
    if ($null -eq $user) {
        # The built-in Administrator account (its SID ends in -500), whatever its name.
        $user = (Get-LocalUser | Where-Object { $_.SID.Value.EndsWith('-500') } | Select-Object -First 1).Name
    }
    $secure = ConvertTo-Secure -Text $password
    $existing = Get-LocalUser -Name $user -ErrorAction SilentlyContinue
    if ($null -eq $existing) {
        $null = New-LocalUser -Name $user -Password $secure -PasswordNeverExpires -AccountNeverExpires
        Add-LocalGroupMember -SID 'S-1-5-32-544' -Member $user
    } else {
        Set-LocalUser -Name $user -Password $secure -PasswordNeverExpires $true
        Enable-LocalUser -Name $user
    }
    Write-AgentLog -Message "local administrator $user set"
}

function Set-StaticNetwork {
    param([hashtable]$Values)
    $address = Get-Value -Values $Values -Name 'guest_v4_ip_addr'
    $dns1 = Get-Value -Values $Values -Name 'guest_v4_dns1'
    $dns2 = Get-Value -Values $Values -Name 'guest_v4_dns2'
    $suffix = Get-Value -Values $Values -Name 'guest_net_dns_suffix'
    if ($null -eq $address -and $null -eq $dns1 -and $null -eq $suffix) { return }
    $adapter = Get-NetAdapter -Physical | Where-Object { $_.Status -eq 'Up' } | Sort-Object -Property ifIndex | Select-Object -First 1
    if ($null -eq $adapter) {
        $adapter = Get-NetAdapter -Physical | Sort-Object -Property ifIndex | Select-Object -First 1
    }
    if ($null -eq $adapter) { throw 'no network adapter to configure' }
    $index = [int]$adapter.ifIndex
    if ($null -ne $address) {
        $prefix = Get-Value -Values $Values -Name 'guest_v4_cidr_prefix'
        if ($null -eq $prefix) { throw 'guest_v4_cidr_prefix is required with guest_v4_ip_addr' }
        $gateway = Get-Value -Values $Values -Name 'guest_v4_default_gw'
        Set-NetIPInterface -InterfaceIndex $index -AddressFamily IPv4 -Dhcp Disabled
        Get-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -ErrorAction SilentlyContinue | Remove-NetIPAddress -Confirm:$false
        Get-NetRoute -InterfaceIndex $index -AddressFamily IPv4 -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue | Remove-NetRoute -Confirm:$false
        if ($null -ne $gateway) {
            $null = New-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -IPAddress $address -PrefixLength ([byte]$prefix) -DefaultGateway $gateway
        } else {
            $null = New-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -IPAddress $address -PrefixLength ([byte]$prefix)
        }
        Write-AgentLog -Message "static address $address/$prefix on interface $index"
    }
    $servers = @(@($dns1, $dns2) | Where-Object { $null -ne $_ })
    if ($servers.Count -gt 0) {
        Set-DnsClientServerAddress -InterfaceIndex $index -ServerAddresses $servers
        Write-AgentLog -Message ('DNS servers ' + ($servers -join ', '))
    }
    if ($null -ne $suffix) {
        Set-DnsClient -InterfaceIndex $index -ConnectionSpecificSuffix $suffix
        Set-DnsClientGlobalSetting -SuffixSearchList @($suffix)
        Write-AgentLog -Message "DNS suffix $suffix"
    }
}

function Set-ComputerIdentity {
    # Renames the computer and joins the domain (in the OU when given); both take effect at
    # the restart that follows.
    param([hashtable]$Values)
    $name = Get-Value -Values $Values -Name 'guest_host_name'
    $domain = Get-Value -Values $Values -Name 'guest_domain_join_target'
    $renamed = $false
    if ($null -ne $name -and $name -ne [string]$env:COMPUTERNAME) {
        Rename-Computer -NewName $name -Force
        $renamed = $true
        Write-AgentLog -Message "computer renamed to $name"
    }
    if ($null -eq $domain) { return }
    $user = Get-Value -Values $Values -Name 'guest_domain_join_uid'
    $password = Get-Value -Values $Values -Name 'guest_domain_join_pw'
    if ($null -eq $user -or $null -eq $password) {
        throw 'guest_domain_join_uid and guest_domain_join_pw are required with guest_domain_join_target'
    }
    $credential = New-Object System.Management.Automation.PSCredential($user, (ConvertTo-Secure -Text $password))
    $ou = Get-Value -Values $Values -Name 'guest_domain_join_ou'
    $join = @{ DomainName = $domain; Credential = $credential; Force = $true }
    if ($null -ne $ou) { $join['OUPath'] = $ou }
    if ($renamed) { $join['Options'] = 'JoinWithNewName' }
    Add-Computer @join
    Write-AgentLog -Message "joined domain $domain"
}

function Disable-Agent {
    Unregister-ScheduledTask -TaskName $TaskName -Confirm:$false -ErrorAction SilentlyContinue
    Write-AgentLog -Message 'agent task removed'
}

function Invoke-Agent {
    $null = New-Item -ItemType Directory -Force -Path $AgentDirectory
    $versionPath = Join-Path -Path $AgentDirectory -ChildPath 'version'
    $version = $null
    if (Test-Path -LiteralPath $versionPath -PathType Leaf) {
        $version = ([System.IO.File]::ReadAllText($versionPath)).Trim()
    }
    Write-AgentLog -Message "agent $version started"
    $rsa = $null
    $published = $false
    try {
        while ($true) {
            $items = Read-HostItems
            $hostState = [string]$items['hlvmm.meta.host_provisioning_system_state']
            if (-not $published -and $hostState -eq 'waitingforpublickey') {
                $hostVersion = [string]$items['hlvmm.meta.version']
                if ([string]::IsNullOrEmpty($hostVersion) -or ($null -ne $version -and $hostVersion -ne $version)) {
                    Set-GuestFailed -Reason ('version mismatch: the host runs {0}, this agent is {1}' -f $hostVersion, $version)
                    Disable-Agent
                    return
                }
                $rsa = New-Object System.Security.Cryptography.RSACryptoServiceProvider(2048)
                $rsa.PersistKeyInCsp = $false
                $public = [Convert]::ToBase64String($rsa.ExportCspBlob($false))
                Remove-GuestItem -Name 'hlvmm.meta.guest_provisioning_error'
                Write-GuestItem -Name 'hlvmm.meta.guest_provisioning_public_key' -Value $public
                Set-GuestState -State 'waitingforaeskey'
                $published = $true
            } elseif ($published -and $hostState -eq 'provisioningdatapublished') {
                Set-GuestState -State 'applying'
                try {
                    $values = Get-Payload -Rsa $rsa -Items $items
                    Set-LocalAdministrator -Values $values
                    Set-StaticNetwork -Values $values
                    Set-ComputerIdentity -Values $values
                } catch {
                    Set-GuestFailed -Reason $_.Exception.Message
                    Disable-Agent
                    return
                } finally {
                    $values = $null
                }
                Remove-GuestItem -Name 'hlvmm.meta.guest_provisioning_error'
                Set-GuestState -State 'provisioningapplied'
                Disable-Agent
                Restart-Computer -Force
                return
            }
            Start-Sleep -Seconds $PollSeconds
        }
    } finally {
        if ($null -ne $rsa) { $rsa.Dispose() }
    }
}

Invoke-Agent
