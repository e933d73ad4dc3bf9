# Test-VmMigration.ps1 - checks whether a VM can move (Compare-VM), or, for a storage move on
# the same host, whether the destination folder's volume has room for the VM's files.
#
# Request (stdin, JSON): {"id":"<guid>","destination_host":"<host>","with_storage":bool,"destination_path":"<folder>"|null,"storage_only":bool}
# Result data: {compatible, incompatibilities:[{message, message_id}]}
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    if ([bool](Get-AethervField -Request $Request -Name 'storage_only' -Default $false)) {
        $path = [string](Get-AethervRequiredField -Request $Request -Name 'destination_path')
        $problems = New-Object -TypeName System.Collections.ArrayList
        $volume = Get-AethervVolumeFor -Path $path
        if ($null -eq $volume) {
            $null = $problems.Add([ordered]@{ message = ('The destination storage path ' + $path + ' is on no volume of this host.'); message_id = $null })
        } else {
            $needed = [int64]0
            foreach ($drive in @(Hyper-V\Get-VMHardDiskDrive -VM $vm)) {
                if ($null -ne $drive.Path -and [string]$drive.Path -ne '') {
                    $needed += [int64](Hyper-V\Get-VHD -Path $drive.Path).FileSize
                }
            }
            if ([int64]$volume.FreeSpace -lt $needed) {
                $null = $problems.Add([ordered]@{
                    message = ('The destination volume ' + [string]$volume.Name + ' has ' + [int64]$volume.FreeSpace + ' bytes free; the virtual machine''s files need ' + $needed + ' bytes.')
                    message_id = $null
                })
            }
        }
        return [ordered]@{ compatible = ($problems.Count -eq 0); incompatibilities = $problems.ToArray() }
    }
    $destination = [string](Get-AethervRequiredField -Request $Request -Name 'destination_host')
    $compare = @{ VM = $vm; DestinationHost = $destination }
    if ([bool](Get-AethervField -Request $Request -Name 'with_storage' -Default $false)) {
        $compare['IncludeStorage'] = $true
        $path = Get-AethervField -Request $Request -Name 'destination_path'
        if ($null -ne $path) { $compare['DestinationStoragePath'] = [string]$path }
    }
    $report = Hyper-V\Compare-VM @compare
    $incompatibilities = @(foreach ($item in @($report.Incompatibilities)) {
        if ($null -eq $item) { continue }
        [ordered]@{ message = [string]$item.Message; message_id = [int64]$item.MessageId }
    })
    [ordered]@{ compatible = ($incompatibilities.Count -eq 0); incompatibilities = $incompatibilities }
}
