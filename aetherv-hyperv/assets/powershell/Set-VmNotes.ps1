# Set-VmNotes.ps1 - replaces a VM's notes (Set-VM -Notes; allowed in any VM state), e.g. to clear
# the provisioning marker of an adopted orphan.
#
# Request (stdin, JSON): {"id":"<guid>","notes":"<text, may be empty>"}
# Result data: {id, notes} (the notes as the host now has them)
# Windows PowerShell 5.1 compatible; request values are only used as parameter values.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
. (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')

Invoke-AethervScript -Body {
    param($Request)
    $vm = Get-AethervVm -Id (Get-AethervRequiredField -Request $Request -Name 'id')
    $notes = [string](Get-AethervField -Request $Request -Name 'notes' -Default '')
    Hyper-V\Set-VM -VM $vm -Notes $notes
    $after = Hyper-V\Get-VM -Id $vm.Id
    [ordered]@{ id = $after.Id.ToString(); notes = [string]$after.Notes }
}
