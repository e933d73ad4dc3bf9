//! A simulated Hyper-V fleet: a stateful fake of clusters, hosts and VMs that serves real
//! WS-Man, so that everything above it (aetherv-hyperv's typed API, provisioning, inventory,
//! the server's demo, third-party WinRM clients) runs on loopback without a Windows host.
//!
//! It follows the rules of real Hyper-V (numeric VM states, the power-action table, memory and
//! storage accounting, KVP size limits), answers the KVP provisioning handshake with a
//! simulated guest agent, injects seeded faults, and emulates every host script of
//! aetherv-hyperv by name. It uses aetherv-hyperv's own types where they are the same concept
//! ([`VmState`](aetherv_hyperv::ops::VmState), [`PowerAction`](aetherv_hyperv::ops::PowerAction),
//! [`OsFamily`](aetherv_hyperv::OsFamily)); [`SimVm`] is the model's own VM record.
//!
//! # Features
//!
//! - `cli` (default): the `aetherv-hostsim` binary, which serves a generated fleet from the
//!   command line. It alone needs `clap` and `tracing-subscriber`; library users can depend
//!   on this crate with `default-features = false` and carry neither.
//!
//! Layers, from the bottom (everything but [`fleet`] and the private endpoint glue is plain
//! data and pure functions; time is passed in):
//!
//! - [`model`]: clusters, hosts, VMs, disks, NICs, switches, golden images, provisioning ISOs
//!   and KVP pools, with memory and storage accounting; [`FleetSpec`] + [`Fleet::generate`]
//!   build a realistic fleet deterministically from a seed.
//! - [`guest`]: a simulated guest agent that answers the KVP provisioning handshake: a thin
//!   driver of `aetherv-kvp`'s guest half (RSA key in PKCS#1 DER form on Linux guests, CAPI
//!   PUBLICKEYBLOB on Windows guests, AES-256-CBC pieces, checksum) that applies the
//!   decrypted data to the VM; [`host_role`] wraps `aetherv-kvp`'s host half for tests.
//! - [`state`]: the fleet plus its guest agents; every KVP write or power change wakes the
//!   agent of the VM concerned.
//! - [`guest_bridge`]: a VM's guest side served by a real guest agent process (the
//!   `aetherv-guest` binary) instead of the simulated agent: its KVP items mirrored into
//!   `hv_kvp_daemon`-style pool files and back ([`SimFleet::start_guest_bridge`]).
//! - [`faults`]: per-host seeded fault plans (latency, outages, dropped connections, HTTP
//!   statuses, WS-Man faults, hung and failing commands).
//! - [`deploy`]: a per-host virtual file system for the install directory and emulations of
//!   the deployment helper scripts (recognised by their `# aetherv-inline: <Name>` marker in
//!   `-EncodedCommand` scripts); a deployment sets the host's installed script version.
//! - [`scripts`]: emulations of the project's host scripts, recognised by file name in
//!   `powershell.exe -File <dir>\<Name>.ps1` (see [`aetherv_hyperv::protocol`]): one emulation per
//!   script in `assets/powershell/` (see [`aetherv_hyperv::ops::scripts`]), applying the script's
//!   documented effect to the model.
//! - The command interpreter: a documented subset of `cmd.exe` (`echo`, `hostname`,
//!   `exit [/b] N`) and of PowerShell (`Write-Output`, `Write-Host`, `Write-Error` as CLIXML,
//!   `Write-Warning`, `exit N`, `$input`, `[Console]::In.ReadToEnd()`, `hostname`,
//!   `$env:COMPUTERNAME`, string literals, `'x' * N`), via `-EncodedCommand` (this project's
//!   client and pywinrm) or `-Command`. Unknown commands fail with the real error texts.
//! - [`fleet`]: [`SimFleet`] starts one aetherv-winrm WS-Man server per host (NTLM with
//!   message encryption, or HTTPS with Basic/NTLM) and gives tests access to the model and the
//!   fault plans at run time.
//!
//! The `aetherv-hostsim` binary (feature `cli`) serves a generated fleet from the command line.
//!
//! # Command set
//!
//! WinRM runs a command line (the command and its arguments joined by spaces) through
//! `cmd.exe`. The simulated host recognises:
//!
//! - `powershell[.exe] ... -File <install dir>\<Name>.ps1`: a host script. The JSON request
//!   is read from stdin and the emulation registered as `<Name>` answers (see [`scripts`]);
//!   a name without emulation, another directory, or a host without installed scripts gives
//!   powershell.exe's "The argument '...' to the -File parameter does not exist." (exit code
//!   -196608).
//! - `powershell[.exe] ... -EncodedCommand <base64>` (also `-enc`, `-e`, `-ec`, any case; this
//!   project's `powershell.exe -NoProfile -NonInteractive -EncodedCommand` and pywinrm's
//!   `powershell -encodedcommand`), or `-Command <text>`: the script runs in the PowerShell
//!   subset below. The project client's stdin bootstrap (for scripts longer than the command
//!   line) is recognised and the script it reads from stdin runs instead.
//! - `cmd[.exe] /c <line>`: the line is interpreted again. Anything else is a cmd.exe line.
//!
//! **cmd.exe subset**: `echo <text>` (`echo` alone prints `ECHO is on.`, `echo.` an empty
//! line), `hostname`, `exit [/b] [N]`. Anything else writes `'X' is not recognized as an
//! internal or external command,` / `operable program or batch file.` to stderr, exit code 1.
//!
//! **PowerShell subset** (statements separated by `;` or newlines, `#` comments):
//! - `Write-Output`/`echo`/`write` with one or more expressions (a bare expression also writes
//!   its value), `Write-Host [-NoNewline]`;
//! - `Write-Error <expr>` (or `-Message <expr>`): an error record on stderr as CLIXML
//!   (`#< CLIXML` + `<Objs ...><S S="Error">...`), formatted like Windows PowerShell 5.1
//!   (`Write-Error 'x' : x` + CategoryInfo + FullyQualifiedErrorId); `Write-Warning <expr>`;
//! - `exit [N]`, `$name = <expr>`, `hostname`;
//! - expressions: single-quoted strings (`''` escapes; the typographic single quotes count,
//!   as in PowerShell), double-quoted strings with backtick escapes and `$env:NAME`, `$var`,
//!   `$(...)` expansion, integers, `(expr)`, `expr * N` (string repetition: `('x' * 5000000)`
//!   writes 5 MB), `expr + expr`, `$env:COMPUTERNAME`, `[Environment]::MachineName`,
//!   `$LASTEXITCODE`, `$input` (stdin line by line) and `[Console]::In.ReadToEnd()` (all of
//!   stdin), optionally piped into `Write-Output`, `Out-String`, `Out-Default` or `Out-Host`.
//! - An unknown command writes PowerShell's "X : The term 'X' is not recognized as the name of
//!   a cmdlet, function, script file, or operable program. ..." record (with `At line:N
//!   char:M`, the source line and the `~~~` marker) and execution continues. Syntax outside
//!   the subset (keywords such as `foreach`, script blocks) is a parse error: nothing runs.
//!
//! Exit code: `exit N` gives N; otherwise 1 if an error record was written, else 0 (real
//! PowerShell reports whether the *last* statement succeeded; the two differ only when an
//! error is followed by successful statements). stdout lines end in CRLF and are UTF-8 (the
//! shell's code page is 65001), so non-ASCII text round-trips.
//!
//! # Example
//!
//! ```
//! use aetherv_hyperv::protocol::{DEFAULT_INSTALL_DIRECTORY, parse_result, script_arguments};
//! use aetherv_sim::{Credentials, Fault, FaultPlan, FleetSpec, SimFleet, SimOptions, Trigger};
//! use aetherv_winrm::{Client, client::CommandSpec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two hosts with three VMs each, served on free loopback ports (NTLM + message encryption).
//! let spec = FleetSpec { hosts: 2, vms_per_host: 3, ..FleetSpec::default() };
//! let sim = SimFleet::start(spec, Credentials::new("Administrator", "P@ss"), SimOptions::default()).await?;
//! let hv01 = sim.host("hv01").expect("generated");
//!
//! let client = Client::builder(&hv01.endpoint()).ntlm("Administrator", "P@ss").build()?;
//! let out = client.run_powershell("Write-Output 'hello'").await?;
//! assert_eq!(out.stdout_text(), "hello\r\n");
//!
//! // Host scripts answer with one JSON document between marker lines.
//! let facts = client
//!     .run(CommandSpec::new("powershell.exe")
//!         .args(script_arguments(DEFAULT_INSTALL_DIRECTORY, "Get-HostFacts"))
//!         .stdin(b"{}".to_vec()))
//!     .await?;
//! let facts = parse_result("Get-HostFacts", &facts.stdout_text())?;
//! assert_eq!(facts.data.expect("ok")["name"], "hv01");
//!
//! // Faults at run time: the next Command request gets HTTP 500.
//! hv01.set_fault_plan(FaultPlan::new(7).rule_on("Command", Fault::HttpStatus(500), Trigger::Nth(1)));
//! assert!(client.run_command("echo", &["x"]).await.is_err());
//! assert_eq!(hv01.vms().len(), 3);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod clixml;
mod endpoint;
pub mod error;
mod generate;
mod host;
mod rng;
mod shell;

pub mod deploy;
pub mod devices;
pub mod faults;
pub mod fleet;
pub mod guest;
pub mod guest_bridge;
pub mod host_role;
pub mod maintenance;
pub mod migration;
pub mod model;
pub mod scripts;
pub mod state;

pub use error::{Error, Result};
pub use faults::{Fault, FaultPlan, FaultRule, Trigger};
pub use fleet::{Credentials, SimFleet, SimHost, SimOptions};
pub use generate::{FleetSpec, SIM_AGENT_VERSION, SIM_SCRIPTS_VERSION};
pub use guest::{GuestAgent, KeySource};
pub use guest_bridge::{BridgeOptions, GuestBridge};
pub use migration::{Migration, MigrationState, MigrationTiming, MoveKind};
pub use model::{
    ControllerType, DiskType, DvdDrive, Fleet, Host, NewVm, Processor, SimVm, VirtualDisk,
};
pub use scripts::{RenderedResult, ScriptContext, ScriptEmulator, ScriptRegistry};
pub use state::{LooseFile, SimState};
