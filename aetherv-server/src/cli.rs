//! The command line: `aetherv-server [serve | check-config] [--help] [--version]`.
//!
//! Everything else is configured through the environment and secret files (see
//! `CONFIGURATION.md`), so the command line stays small. It is parsed with `lexopt`, a
//! dependency-free argument lexer, rather than clap: the server's dependency tree without the
//! demo feature must not contain clap, and four words do not need a derive framework.

use std::ffi::OsString;
use std::fmt::Write as _;

use crate::config::{AuthConfig, Config, DEMO_AVAILABLE, DisabledReason, Mode};

/// The one-line usage, printed with every command-line error.
pub const USAGE: &str = "usage: aetherv-server [serve | check-config] [--help] [--version]";

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start the server (also when no command is given).
    Serve,
    /// Check the configuration and exit.
    CheckConfig,
    /// Print the help and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// A command line that cannot be understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// An argument that is not a known command.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A second command, or an unknown option or value.
    #[error("{0}")]
    Unexpected(#[from] lexopt::Error),
}

/// Parses the arguments after the program name. `--help` and `--version` win over a command.
///
/// # Errors
///
/// [`CliError`] for an unknown command, an unknown option, an option value, or a second
/// command.
pub fn parse<I>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::Arg::{Long, Short, Value};
    let mut parser = lexopt::Parser::from_args(args);
    let mut command = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(value) if command.is_none() => {
                command = Some(match value.to_str() {
                    Some("serve") => Command::Serve,
                    Some("check-config") => Command::CheckConfig,
                    _ => {
                        return Err(CliError::UnknownCommand(
                            value.to_string_lossy().into_owned(),
                        ));
                    }
                });
            }
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(command.unwrap_or(Command::Serve))
}

/// The `--version` line: the version and whether this build has the demo fleet.
#[must_use]
pub fn version() -> String {
    format!(
        "aetherv-server {} ({})",
        env!("CARGO_PKG_VERSION"),
        if DEMO_AVAILABLE {
            "with the demo fleet"
        } else {
            "without the demo fleet"
        }
    )
}

/// The `--help` text.
#[must_use]
pub fn help() -> String {
    let demo = if DEMO_AVAILABLE {
        "With no hosts configured (HYPERV_HOSTS and HOSTS_FILE unset) it starts a simulated demo\n\
         fleet on loopback with authentication off."
    } else {
        "This build has no demo fleet: HYPERV_HOSTS or HOSTS_FILE must name the hosts."
    };
    format!(
        "{version}\n\
         The aetherv server: REST API, web UI, job queue and inventory for a Hyper-V fleet.\n\
         \n\
         {USAGE}\n\
         \n\
         Commands:\n\
         \x20 serve          start the server (the default)\n\
         \x20 check-config   check the configuration and exit: one line per problem and exit\n\
         \x20                code 2, or a short summary and exit code 0; starts nothing\n\
         \n\
         Options:\n\
         \x20 -h, --help     print this help and exit\n\
         \x20 -V, --version  print the version and exit\n\
         \n\
         Configuration comes from environment variables and secret files under SECRETS_DIR\n\
         (default /run/secrets); aetherv-server/CONFIGURATION.md describes every variable.\n\
         {demo}\n",
        version = version()
    )
}

/// How many host names the summary lists before it only counts.
const SUMMARY_HOSTS: usize = 5;

/// The `check-config` summary of a valid configuration: what would run, never a secret.
#[must_use]
pub fn summary(config: &Config) -> String {
    let mut out = String::from("configuration ok\n");
    match &config.mode {
        Mode::Demo(demo) => {
            let _ = writeln!(
                out,
                "mode: demo ({} simulated hosts, {} VMs each, {} clusters)",
                demo.hosts, demo.vms_per_host, demo.clusters
            );
        }
        Mode::Fleet(hosts) => {
            let names: Vec<&str> = hosts
                .iter()
                .take(SUMMARY_HOSTS)
                .map(|h| h.name.as_str())
                .collect();
            let more = hosts.len().saturating_sub(SUMMARY_HOSTS);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "mode: fleet, {} host{}: {}{more}",
                hosts.len(),
                if hosts.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
        }
    }
    let _ = write!(out, "listen: {}", config.listen_addr);
    if let Some(url) = &config.public_url {
        let _ = write!(out, " (public URL {url})");
    }
    out.push('\n');
    let auth = match &config.auth {
        AuthConfig::Disabled(DisabledReason::Demo) => "off (demo mode)".to_owned(),
        AuthConfig::Disabled(_) => "off (AUTH_ENABLED=false, development only)".to_owned(),
        AuthConfig::Oidc(oidc) => format!(
            "OIDC, issuer {}, client {}, browser login {}",
            oidc.issuer_url,
            oidc.client_id,
            if oidc.login.is_some() { "on" } else { "off" }
        ),
    };
    let _ = writeln!(out, "authentication: {auth}");
    let _ = writeln!(
        out,
        "jobs: {} at once, {} per host, {} kept; inventory refresh every {} s",
        config.job_concurrency,
        config.job_concurrency_per_host,
        config.job_history,
        config.refresh_interval.as_secs()
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().copied())
    }

    #[test]
    fn commands_and_options() {
        assert_eq!(cmd(&[]).unwrap(), Command::Serve);
        assert_eq!(cmd(&["serve"]).unwrap(), Command::Serve);
        assert_eq!(cmd(&["check-config"]).unwrap(), Command::CheckConfig);
        assert_eq!(cmd(&["--help"]).unwrap(), Command::Help);
        assert_eq!(cmd(&["-h"]).unwrap(), Command::Help);
        assert_eq!(cmd(&["check-config", "--help"]).unwrap(), Command::Help);
        assert_eq!(cmd(&["--version"]).unwrap(), Command::Version);
        assert_eq!(cmd(&["-V"]).unwrap(), Command::Version);
    }

    #[test]
    fn anything_else_is_an_error() {
        assert_eq!(
            cmd(&["bogus"]).unwrap_err().to_string(),
            "unknown command \"bogus\""
        );
        for args in [
            &["--port", "8000"][..],
            &["-x"],
            &["serve", "check-config"],
            &["check-config", "extra"],
        ] {
            let err = cmd(args).expect_err("an error");
            assert!(!err.to_string().is_empty(), "{args:?}");
        }
        assert!(cmd(&["--port"]).unwrap_err().to_string().contains("--port"));
    }

    #[test]
    fn help_and_version_describe_this_build() {
        let help = help();
        assert!(help.contains(USAGE));
        assert!(help.contains("check-config"));
        assert!(help.contains("CONFIGURATION.md"));
        assert!(help.contains(env!("CARGO_PKG_VERSION")));
        assert!(version().starts_with(concat!("aetherv-server ", env!("CARGO_PKG_VERSION"))));
        assert_eq!(
            help.contains("it starts a simulated demo"),
            DEMO_AVAILABLE,
            "{help}"
        );
    }

    fn load(vars: &[(&str, &str)]) -> Config {
        Config::from_sources(
            &|name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            },
            std::path::Path::new("/nonexistent-aetherv-cli-test"),
        )
        .unwrap()
    }

    #[test]
    fn summary_of_a_fleet_never_shows_secrets() {
        let hosts: Vec<String> = (1..=7).map(|i| format!("hv{i:02}.lab.example")).collect();
        let hosts = hosts.join(",");
        let config = load(&[
            ("HYPERV_HOSTS", &hosts),
            ("WINRM_USERNAME", "LAB\\svc"),
            ("WINRM_PASSWORD", "winrm-pw-123"),
            (
                "OIDC_ISSUER_URL",
                "https://login.example.com/realms/aetherv",
            ),
            ("OIDC_CLIENT_ID", "aetherv"),
            ("OIDC_ADMIN_ROLE", "aetherv-admin"),
            ("OIDC_CLIENT_SECRET", "client-secret-456"),
        ]);
        let text = summary(&config);
        assert!(text.starts_with("configuration ok\n"), "{text}");
        assert!(
            text.contains(
                "mode: fleet, 7 hosts: hv01.lab.example, hv02.lab.example, hv03.lab.example, \
                 hv04.lab.example, hv05.lab.example and 2 more\n"
            ),
            "{text}"
        );
        assert!(text.contains("listen: 127.0.0.1:8000\n"), "{text}");
        assert!(
            text.contains(
                "authentication: OIDC, issuer https://login.example.com/realms/aetherv, client \
                 aetherv, browser login on\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("jobs: 4 at once, 2 per host, 1000 kept"),
            "{text}"
        );
        assert!(!text.contains("winrm-pw-123") && !text.contains("client-secret-456"));
    }

    #[cfg(feature = "demo")]
    #[test]
    fn summary_of_the_demo() {
        let config = load(&[
            ("DEMO_HOSTS", "3"),
            ("AETHERV_DEMO_PASSWORD", "demo-pw-789"),
        ]);
        let text = summary(&config);
        assert!(
            text.contains("mode: demo (3 simulated hosts, 8 VMs each, 2 clusters)\n"),
            "{text}"
        );
        assert!(text.contains("authentication: off (demo mode)\n"), "{text}");
        assert!(!text.contains("demo-pw-789"));
    }
}
