//! Static checks of the host scripts in `assets/powershell/`: one file per operation, the
//! DESIGN.md preamble, the shared protocol helpers, `Hyper-V\`-prefixed cmdlets, and no
//! dynamic code execution. (The grammar check over every `.ps1` is scripts/check-powershell.py.)

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use aetherv_hyperv::ops::scripts;

fn script(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/powershell")
        .join(format!("{name}.ps1"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Hyper-V module cmdlets the scripts use; each must be written `Hyper-V\<cmdlet>`.
const HYPERV_CMDLETS: [&str; 24] = [
    "Get-VM",
    "Start-VM",
    "Stop-VM",
    "Save-VM",
    "Suspend-VM",
    "Resume-VM",
    "Restart-VM",
    "Remove-VM",
    "New-VM",
    "Set-VM",
    "Move-VM",
    "Compare-VM",
    "Get-VMHost",
    "Get-VMSwitch",
    "Get-VHD",
    "Get-VMHardDiskDrive",
    "Get-VMDvdDrive",
    "Add-VMDvdDrive",
    "Get-VMNetworkAdapter",
    "Set-VMNetworkAdapterVlan",
    "Get-VMIntegrationService",
    "Set-VMMemory",
    "Set-VMProcessor",
    "Set-VMFirmware",
];

#[test]
fn every_operation_has_a_script_with_the_contract() {
    let common = script(scripts::COMMON);
    for line in [
        "Set-StrictMode -Version Latest",
        "$ErrorActionPreference = 'Stop'",
        "$ProgressPreference = 'SilentlyContinue'",
        "[Console]::In.ReadToEnd()",
        "ConvertTo-Json -InputObject $Document -Depth 8 -Compress",
        "===AETHERV-RESULT-BEGIN===",
        "===AETHERV-RESULT-END===",
    ] {
        assert!(common.contains(line), "AethervCommon.ps1 lacks {line}");
    }
    for name in scripts::ALL {
        let text = script(name);
        for line in [
            "Set-StrictMode -Version Latest",
            "$ErrorActionPreference = 'Stop'",
            "$ProgressPreference = 'SilentlyContinue'",
            ". (Join-Path -Path $PSScriptRoot -ChildPath 'AethervCommon.ps1')",
            "Invoke-AethervScript -Body {",
        ] {
            assert!(text.contains(line), "{name}.ps1 lacks {line}");
        }
    }
}

#[test]
fn cmdlets_are_module_qualified_and_nothing_is_evaluated() {
    let mut names: Vec<&str> = scripts::ALL.to_vec();
    names.push(scripts::COMMON);
    for name in names {
        let text = script(name);
        for (number, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or_default();
            for cmdlet in HYPERV_CMDLETS {
                for (at, _) in code.match_indices(cmdlet) {
                    let before = &code[..at];
                    let after = code[at + cmdlet.len()..].chars().next();
                    // Whole cmdlet names only (not Get-VMHost when looking for Get-VM).
                    if after.is_some_and(|c| c.is_ascii_alphanumeric())
                        || before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
                    {
                        continue;
                    }
                    assert!(
                        before.ends_with("Hyper-V\\"),
                        "{name}.ps1:{}: {cmdlet} without the Hyper-V\\ prefix",
                        number + 1
                    );
                }
            }
            for forbidden in [
                "Invoke-Expression",
                "iex ",
                "[scriptblock]::Create",
                "Add-Type",
                "-EncodedCommand",
            ] {
                assert!(
                    !code.contains(forbidden),
                    "{name}.ps1:{}: {forbidden}",
                    number + 1
                );
            }
        }
    }
}
