//! One simulated host's command execution: classify the command line, apply command-level
//! faults, then run a host script emulation, the PowerShell subset or the cmd.exe subset.
//!
//! The only I/O is through [`CommandStreams`] (stdin, stdout, stderr), so the whole path is
//! tested without a network; the WinRM glue adapts the server's command I/O to it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use crate::clixml::{self, StreamRecord};
use crate::deploy;
use crate::faults::{CommandDecision, FaultEngine, FaultPlan};
use crate::scripts::{PendingMove, RenderedResult, ScriptContext, ScriptRegistry};
use crate::shell::{self, Invocation, Outcome, ShellContext};
use crate::state::SimState;
use aetherv_hyperv::protocol::{self, ScriptResult};

/// Output is handed to the transport in pieces of this size.
const OUTPUT_PIECE: usize = 64 * 1024;

/// How often a script waiting for a move looks at it.
const MOVE_POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// powershell.exe's exit code for a command line it cannot run (`0xFFFD0000`).
const POWERSHELL_USAGE_EXIT: i64 = -196_608;

/// The streams of one running command.
pub(crate) trait CommandStreams: Send {
    /// Reads stdin until the client closes it.
    fn read_stdin(&mut self) -> impl Future<Output = Vec<u8>> + Send;
    /// Writes to stdout.
    fn write_stdout(&mut self, data: Bytes) -> impl Future<Output = ()> + Send;
    /// Writes to stderr.
    fn write_stderr(&mut self, data: Bytes) -> impl Future<Output = ()> + Send;
}

/// Everything one simulated host needs to run commands.
pub(crate) struct HostRuntime {
    pub(crate) name: String,
    pub(crate) state: Arc<Mutex<SimState>>,
    pub(crate) faults: Mutex<FaultEngine>,
    pub(crate) scripts: Arc<ScriptRegistry>,
    pub(crate) install_directory: String,
    /// `true` while the host is frozen (like a SIGSTOPped process): connections are accepted
    /// but no request is answered until it thaws.
    pub(crate) frozen: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for HostRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRuntime")
            .field("name", &self.name)
            .field("install_directory", &self.install_directory)
            .finish_non_exhaustive()
    }
}

fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.strip_prefix('\u{feff}').unwrap_or(&s).to_owned()
}

impl HostRuntime {
    pub(crate) fn new(
        name: &str,
        state: Arc<Mutex<SimState>>,
        plan: FaultPlan,
        scripts: Arc<ScriptRegistry>,
        install_directory: &str,
    ) -> Self {
        Self {
            name: name.to_owned(),
            state,
            faults: Mutex::new(FaultEngine::new(plan)),
            scripts,
            install_directory: install_directory.to_owned(),
            frozen: tokio::sync::watch::channel(false).0,
        }
    }

    /// Freezes (`true`) or thaws (`false`) the host.
    pub(crate) fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    /// Waits while the host is frozen (returns at once when it is not).
    pub(crate) async fn wait_thawed(&self) {
        let mut rx = self.frozen.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|frozen| !*frozen).await;
    }

    pub(crate) fn lock_state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_faults(&self) -> std::sync::MutexGuard<'_, FaultEngine> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the fault plan (the request counts start over).
    pub(crate) fn set_fault_plan(&self, plan: FaultPlan) {
        *self.lock_faults() = FaultEngine::new(plan);
    }

    /// The script a `-File` path names, if it exists on this host: the directory must be the
    /// install directory, scripts must be installed and an emulation registered.
    fn installed_script(&self, path: &str) -> Option<String> {
        let name = protocol::script_name_from_path(path)?;
        let expected = protocol::script_path(&self.install_directory, name);
        if !expected.eq_ignore_ascii_case(path.trim().trim_matches('"')) {
            return None;
        }
        let installed = self
            .lock_state()
            .fleet()
            .host(&self.name)
            .is_some_and(|h| h.scripts_version.is_some());
        (installed && self.scripts.get(name).is_some()).then(|| name.to_owned())
    }

    /// Runs one command to completion and returns its exit code. A hung command never
    /// returns (the caller drops the future to terminate it).
    pub(crate) async fn execute<S: CommandStreams>(
        &self,
        command: &str,
        arguments: &[String],
        environment: &[(String, String)],
        io: &mut S,
    ) -> i64 {
        let line = shell::command_line(command, arguments);
        let invocation = shell::classify(&line);
        let script_name = match &invocation {
            Invocation::PowerShellFile(path) => protocol::script_name_from_path(path)
                .map(str::to_owned)
                .unwrap_or_default(),
            _ => String::new(),
        };
        let decoded = match &invocation {
            Invocation::PowerShell(script) => script.as_str(),
            _ => "",
        };
        let decision = self
            .lock_faults()
            .on_command(&[&script_name, &line, decoded]);
        let mut migration_fault = None;
        match decision {
            CommandDecision::Run => {}
            CommandDecision::RunFailingMigration { at_percent } => {
                migration_fault = Some(at_percent);
            }
            CommandDecision::Hang => std::future::pending::<()>().await,
            CommandDecision::Fail { exit_code, message } => {
                let outcome = self.failure(&invocation, exit_code, &message);
                return emit(io, outcome).await;
            }
        }

        let ctx = ShellContext {
            hostname: self.name.clone(),
            environment: environment.to_vec(),
        };
        let outcome = match invocation {
            Invocation::Cmd(cmd_line) => shell::run_cmd(&cmd_line, &ctx),
            Invocation::PowerShellUsage { message, exit_code } => Outcome {
                stdout: Vec::new(),
                stderr: format!("{message}\r\n").into_bytes(),
                exit_code,
            },
            Invocation::PowerShell(script) => {
                if let Some(helper) = deploy::recognise(&script) {
                    let input = io.read_stdin().await;
                    let mut state = self.lock_state();
                    deploy::run(
                        &mut state,
                        &self.name,
                        &self.install_directory,
                        helper,
                        &input,
                        SystemTime::now(),
                    )
                } else if shell::is_stdin_bootstrap(&script) {
                    let body = text(&io.read_stdin().await);
                    shell::run_powershell(&body, "", &ctx)
                } else if shell::reads_stdin(&script) {
                    let input = text(&io.read_stdin().await);
                    shell::run_powershell(&script, &input, &ctx)
                } else {
                    shell::run_powershell(&script, "", &ctx)
                }
            }
            Invocation::PowerShellFile(path) => match self.installed_script(&path) {
                Some(name) => {
                    let request = text(&io.read_stdin().await);
                    match self.start_script(&name, &request, migration_fault) {
                        Ok(outcome) => outcome,
                        Err(pending) => self.wait_for_move(&pending).await,
                    }
                }
                None => Outcome {
                    stdout: Vec::new(),
                    stderr: format!(
                        "The argument '{path}' to the -File parameter does not exist. Provide the path to an existing '.ps1' file as an argument to the -File parameter.\r\n"
                    )
                    .into_bytes(),
                    exit_code: POWERSHELL_USAGE_EXIT,
                },
            },
        };
        emit(io, outcome).await
    }

    /// Runs a registered script emulation against the shared state, without waiting for a
    /// move it starts (the answer then says the move is still running).
    #[cfg(test)]
    pub(crate) fn run_script(&self, name: &str, request: &str) -> Outcome {
        match self.start_script(name, request, None) {
            Ok(outcome) => outcome,
            Err(pending) => {
                let state = self.lock_state();
                render(RenderedResult::from(
                    &pending.result(&state).unwrap_or_else(|| {
                        ScriptResult::failure("MoveRunning", "the move is still running")
                    }),
                ))
            }
        }
    }

    /// Waits (polling the model) until the move a script started ends, then answers as the
    /// script does. Every poll applies the moves whose time has come.
    async fn wait_for_move(&self, pending: &PendingMove) -> Outcome {
        loop {
            tokio::time::sleep(MOVE_POLL).await;
            let mut state = self.lock_state();
            state.advance_migrations(SystemTime::now());
            if let Some(result) = pending.result(&state) {
                return render(RenderedResult::from(&result));
            }
        }
    }

    /// Runs a registered script emulation against the shared state; a script that started a
    /// move answers `Err` with the move to wait for.
    fn start_script(
        &self,
        name: &str,
        request: &str,
        migration_fault: Option<u8>,
    ) -> std::result::Result<Outcome, PendingMove> {
        let result = match serde_json::from_str::<serde_json::Value>(request.trim()) {
            Err(e) => RenderedResult::from(&ScriptResult::failure(
                "InvalidRequest",
                format!("{name}: the request on stdin is not one JSON document: {e}"),
            )),
            Ok(request) => match self.scripts.get(name) {
                None => RenderedResult::from(&ScriptResult::failure(
                    "UnknownScript",
                    format!("no script {name}"),
                )),
                Some(emulator) => {
                    let mut state = self.lock_state();
                    let now = SystemTime::now();
                    state.advance_migrations(now);
                    let mut ctx = ScriptContext::new(&mut state, &self.name, now)
                        .in_directory(&self.install_directory)
                        .with_migration_fault(migration_fault);
                    let result = emulator.output(&mut ctx, &request);
                    if let Some(pending) = ctx.pending() {
                        return Err(pending);
                    }
                    result
                }
            },
        };
        Ok(render(result))
    }

    /// The output of a command failed by the fault plan, in the form its kind would fail.
    fn failure(&self, invocation: &Invocation, exit_code: i64, message: &str) -> Outcome {
        match invocation {
            Invocation::PowerShellFile(_) => Outcome {
                stdout: ScriptResult::failure("SimulatedFailure", message)
                    .render()
                    .into_bytes(),
                stderr: Vec::new(),
                exit_code,
            },
            Invocation::PowerShell(_) => Outcome {
                stdout: Vec::new(),
                stderr: clixml::document(&[StreamRecord::Error(vec![
                    message.to_owned(),
                    "    + CategoryInfo          : NotSpecified: (:) [], RuntimeException"
                        .to_owned(),
                    "    + FullyQualifiedErrorId : SimulatedFailure".to_owned(),
                    " ".to_owned(),
                ])]),
                exit_code,
            },
            _ => Outcome {
                stdout: Vec::new(),
                stderr: format!("{message}\r\n").into_bytes(),
                exit_code,
            },
        }
    }
}

fn render(result: RenderedResult) -> Outcome {
    Outcome {
        stdout: result.stdout.into_bytes(),
        stderr: Vec::new(),
        exit_code: if result.ok { 0 } else { 1 },
    }
}

async fn emit<S: CommandStreams>(io: &mut S, outcome: Outcome) -> i64 {
    let stdout = Bytes::from(outcome.stdout);
    for start in (0..stdout.len()).step_by(OUTPUT_PIECE) {
        let end = (start + OUTPUT_PIECE).min(stdout.len());
        io.write_stdout(stdout.slice(start..end)).await;
    }
    if !outcome.stderr.is_empty() {
        io.write_stderr(Bytes::from(outcome.stderr)).await;
    }
    outcome.exit_code
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::faults::{Fault, Trigger};
    use crate::generate::FleetSpec;
    use crate::guest::KeySource;
    use crate::model::Fleet;
    use aetherv_hyperv::protocol::{DEFAULT_INSTALL_DIRECTORY, parse_result, script_arguments};
    use std::time::Duration;

    #[derive(Default)]
    struct Captured {
        stdin: Vec<u8>,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        stdin_reads: usize,
    }

    impl CommandStreams for Captured {
        async fn read_stdin(&mut self) -> Vec<u8> {
            self.stdin_reads += 1;
            std::mem::take(&mut self.stdin)
        }
        async fn write_stdout(&mut self, data: Bytes) {
            self.stdout.extend_from_slice(&data);
        }
        async fn write_stderr(&mut self, data: Bytes) {
            self.stderr.extend_from_slice(&data);
        }
    }

    fn runtime(plan: FaultPlan) -> HostRuntime {
        let fleet = Fleet::generate(FleetSpec::new(2, 3)).unwrap();
        let state = Arc::new(Mutex::new(SimState::new(fleet, KeySource::Shared)));
        HostRuntime::new(
            "hv01",
            state,
            plan,
            Arc::new(ScriptRegistry::builtin()),
            DEFAULT_INSTALL_DIRECTORY,
        )
    }

    async fn run(rt: &HostRuntime, command: &str, args: &[&str], stdin: &[u8]) -> (Captured, i64) {
        let mut io = Captured {
            stdin: stdin.to_vec(),
            ..Captured::default()
        };
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let code = rt.execute(command, &args, &[], &mut io).await;
        (io, code)
    }

    #[tokio::test]
    async fn scripts_run_from_the_install_directory() {
        let rt = runtime(FaultPlan::default());
        let args = script_arguments(DEFAULT_INSTALL_DIRECTORY, "Get-HostFacts");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (io, code) = run(&rt, "powershell.exe", &args, b"{}").await;
        assert_eq!(code, 0);
        let result = parse_result("Get-HostFacts", &String::from_utf8(io.stdout).unwrap()).unwrap();
        let data = result.data.unwrap();
        assert_eq!(data["name"], "hv01");
        assert_eq!(data["fqdn"], "hv01.lab.example");
        assert_eq!(data["images"].as_array().unwrap().len(), 4);

        let args = script_arguments(DEFAULT_INSTALL_DIRECTORY, "Inventory");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (io, code) = run(&rt, "powershell.exe", &args, br#"{"vm": "nope"}"#).await;
        assert_eq!(code, 1);
        let result = parse_result("Inventory", &String::from_utf8(io.stdout).unwrap()).unwrap();
        assert_eq!(result.error.unwrap().code, "VmNotFound");

        let (io, code) = run(&rt, "powershell.exe", &args, b"not json").await;
        assert_eq!(code, 1);
        assert!(
            String::from_utf8(io.stdout)
                .unwrap()
                .contains("InvalidRequest")
        );
    }

    #[tokio::test]
    async fn unknown_scripts_and_directories_do_not_exist() {
        let rt = runtime(FaultPlan::default());
        for args in [
            script_arguments(DEFAULT_INSTALL_DIRECTORY, "New-Thing"),
            script_arguments(r"C:\Elsewhere", "Get-HostFacts"),
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (io, code) = run(&rt, "powershell.exe", &args, b"{}").await;
            assert_eq!(code, POWERSHELL_USAGE_EXIT);
            assert!(
                String::from_utf8(io.stderr)
                    .unwrap()
                    .contains("-File parameter does not exist")
            );
            assert_eq!(io.stdin_reads, 0);
        }
        rt.lock_state()
            .fleet_mut()
            .host_mut("hv01")
            .unwrap()
            .scripts_version = None;
        let args = script_arguments(DEFAULT_INSTALL_DIRECTORY, "Get-HostFacts");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, code) = run(&rt, "powershell.exe", &args, b"{}").await;
        assert_eq!(code, POWERSHELL_USAGE_EXIT);
    }

    #[tokio::test]
    async fn plain_commands_only_read_stdin_when_needed() {
        let rt = runtime(FaultPlan::default());
        let (io, code) = run(&rt, "echo", &["hello"], b"").await;
        assert_eq!(
            (io.stdout.as_slice(), code, io.stdin_reads),
            (&b"hello\r\n"[..], 0, 0)
        );
        let enc = aetherv_winrm::powershell::encode_command("$input");
        let (io, _) = run(&rt, "powershell", &["-encodedcommand", &enc], b"a\nb").await;
        assert_eq!(io.stdout, b"a\r\nb\r\n");
        assert_eq!(io.stdin_reads, 1);
        let long = "Write-Output 'line'\n".repeat(600);
        let inv = aetherv_winrm::powershell::invocation(&long);
        let args: Vec<&str> = inv.arguments.iter().map(String::as_str).collect();
        let (io, code) = run(
            &rt,
            &inv.command,
            &args,
            inv.stdin_script.unwrap().as_bytes(),
        )
        .await;
        assert_eq!(code, 0);
        assert_eq!(io.stdout.len(), "line\r\n".len() * 600);
    }

    #[test]
    fn registered_emulations_run_against_the_model() {
        let mut scripts = ScriptRegistry::builtin();
        scripts.register(
            "Set-VmNotes",
            |ctx: &mut ScriptContext<'_>, request: &serde_json::Value| {
                let (Some(vm), Some(notes)) = (request["vm"].as_str(), request["notes"].as_str())
                else {
                    return ScriptResult::failure("InvalidRequest", "vm and notes are required");
                };
                let host = ctx.host_name().to_owned();
                match ctx.state_mut().fleet_mut().vm_mut(&host, vm) {
                    Ok(v) => {
                        v.notes = notes.to_owned();
                        ScriptResult::success(serde_json::json!({ "id": v.id.to_string() }))
                    }
                    Err(e) => ScriptResult::failure("VmNotFound", e.to_string()),
                }
            },
        );
        let mut rt = runtime(FaultPlan::default());
        rt.scripts = Arc::new(scripts);
        let vm = rt.lock_state().fleet().host("hv01").unwrap().vms[0]
            .name
            .clone();
        let out = rt.run_script(
            "set-vmnotes",
            &format!(r#"{{"vm":"{vm}","notes":"job 42"}}"#),
        );
        assert_eq!(out.exit_code, 0);
        assert_eq!(
            rt.lock_state().fleet().vm("hv01", &vm).unwrap().notes,
            "job 42"
        );
        let out = rt.run_script("Set-VmNotes", r#"{"vm":"nope","notes":"x"}"#);
        assert_eq!(out.exit_code, 1);
    }

    #[tokio::test]
    async fn command_faults_fail_and_hang() {
        let rt = runtime(
            FaultPlan::new(1)
                .rule(
                    Fault::FailCommand {
                        pattern: "Get-HostFacts".to_owned(),
                        exit_code: 2,
                        message: "disk on fire".to_owned(),
                    },
                    Trigger::Nth(1),
                )
                .rule(
                    Fault::HangCommand {
                        pattern: "echo slow".to_owned(),
                    },
                    Trigger::Always,
                ),
        );
        let args = script_arguments(DEFAULT_INSTALL_DIRECTORY, "Get-HostFacts");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (io, code) = run(&rt, "powershell.exe", &args, b"{}").await;
        assert_eq!(code, 2);
        let result = parse_result("Get-HostFacts", &String::from_utf8(io.stdout).unwrap()).unwrap();
        assert_eq!(result.error.unwrap().message, "disk on fire");
        let (_, code) = run(&rt, "powershell.exe", &args, b"{}").await;
        assert_eq!(code, 0, "the fault fires on the first run only");
        let hung =
            tokio::time::timeout(Duration::from_millis(50), run(&rt, "echo", &["slow"], b"")).await;
        assert!(hung.is_err());
    }
}
