//! The outbound boundary of this crate: running PowerShell on one Hyper-V host.
//!
//! Typed operations and artifact deployment never talk to WinRM directly; they go through a
//! [`PowerShellExecutor`], which tests replace with [`MockPowerShellExecutor`] (mockall) and
//! production backs with [`WinRmExecutor`] (an [`aetherv_winrm::Client`]).
//!
//! Two kinds of invocation exist, and neither ever puts caller data into script text:
//! - [`PowerShellExecutor::run_script`] runs a deployed host script by name
//!   (`powershell.exe … -File <install dir>\<Name>.ps1`) with one JSON request on stdin;
//! - [`PowerShellExecutor::run_inline`] runs a fixed script that ships in this crate (a
//!   `&'static str`, e.g. the deployment helpers that must work before any script is
//!   installed), again with its data on stdin.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::protocol::{POWERSHELL, script_arguments};

/// What a PowerShell invocation produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptOutput {
    /// Standard output, as received (UTF-8; the shell uses code page 65001).
    pub stdout: String,
    /// Standard error, CLIXML decoded to readable text.
    pub stderr: String,
    /// The process exit code.
    pub exit_code: i64,
}

/// Runs PowerShell on one host.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PowerShellExecutor: Send + Sync {
    /// The host this executor talks to (for error messages).
    fn host(&self) -> &str;

    /// The directory the host scripts are deployed to.
    fn install_directory(&self) -> &str;

    /// Runs the deployed host script `name` (file stem, e.g. `Get-HostFacts`) with `stdin`
    /// (one JSON request document).
    async fn run_script(&self, name: &str, stdin: Bytes) -> Result<ScriptOutput>;

    /// Runs a fixed script shipped in this crate with `stdin` as its input.
    async fn run_inline(&self, script: &'static str, stdin: Bytes) -> Result<ScriptOutput>;
}

/// [`PowerShellExecutor`] over an [`aetherv_winrm::Client`].
#[derive(Debug, Clone)]
pub struct WinRmExecutor {
    client: aetherv_winrm::Client,
    host: String,
    install_directory: String,
}

impl WinRmExecutor {
    /// An executor for `host` reached through `client`, with scripts in `install_directory`.
    pub fn new(
        client: aetherv_winrm::Client,
        host: impl Into<String>,
        install_directory: impl Into<String>,
    ) -> Self {
        Self {
            client,
            host: host.into(),
            install_directory: install_directory.into(),
        }
    }

    /// The underlying WinRM client.
    pub fn client(&self) -> &aetherv_winrm::Client {
        &self.client
    }

    async fn run(&self, spec: aetherv_winrm::CommandSpec) -> Result<ScriptOutput> {
        let output = self.client.run(spec).await.map_err(|source| Error::WinRm {
            host: self.host.clone(),
            source: Box::new(source),
        })?;
        Ok(ScriptOutput {
            stdout: output.stdout_text(),
            stderr: output.stderr_text(),
            exit_code: output.exit_code,
        })
    }
}

#[async_trait]
impl PowerShellExecutor for WinRmExecutor {
    fn host(&self) -> &str {
        &self.host
    }

    fn install_directory(&self) -> &str {
        &self.install_directory
    }

    async fn run_script(&self, name: &str, stdin: Bytes) -> Result<ScriptOutput> {
        let spec = aetherv_winrm::CommandSpec::new(POWERSHELL)
            .args(script_arguments(&self.install_directory, name))
            .stdin(stdin);
        self.run(spec).await
    }

    async fn run_inline(&self, script: &'static str, stdin: Bytes) -> Result<ScriptOutput> {
        let spec = aetherv_winrm::CommandSpec::powershell(script).stdin(stdin);
        self.run(spec).await
    }
}
