//! `aetherv-guest`: the Linux guest provisioning agent (see the library docs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aetherv_guest::agent::{self, Log, Options, Outcome};

const HELP: &str = "\
aetherv-guest: the Aether-V Linux guest provisioning agent

USAGE:
    aetherv-guest run [--root DIR] [--pool-dir DIR] [--version-file PATH]
                      [--poll-ms N] [--timeout-s N]
    aetherv-guest --version
    aetherv-guest --help

run waits for the host's KVP provisioning handshake (hv_kvp_daemon pool files), applies
the configuration through a cloud-init NoCloud seed, and reports the outcome.

OPTIONS:
    --root DIR           write the configuration under DIR (default /). With any root but
                         /, it only writes the seed files: cloud-init is not run, the seed
                         is kept and the unit is not disabled (for tests).
    --pool-dir DIR       hv_kvp_daemon's pool directory (default /var/lib/hyperv):
                         .kvp_pool_0 host-to-guest, .kvp_pool_1 guest-to-host
    --version-file PATH  the agent's version, compared with hlvmm.meta.version: the
                         file's first line (default /usr/local/lib/aetherv-guest/version,
                         installed from the provisioning ISO); the agent's own crate
                         version when the file does not exist
    --poll-ms N          read the host's items every N milliseconds (default 1000)
    --timeout-s N        give up after N seconds (default: wait for ever)

EXIT STATUS: 0 applied, 1 failed or timed out, 2 usage error.
";

enum Command {
    Run(Options),
    Version,
    Help,
}

fn parse() -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut options = Options::default();
    let mut run = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("version") | Short('V') => return Ok(Command::Version),
            Long("help") | Short('h') => return Ok(Command::Help),
            Value(v) if !run && v == "run" => run = true,
            Long("root") if run => options.root = PathBuf::from(parser.value()?),
            Long("pool-dir") if run => options.pool_dir = PathBuf::from(parser.value()?),
            Long("version-file") if run => options.version_file = PathBuf::from(parser.value()?),
            Long("poll-ms") if run => {
                let ms: u64 = parser.value()?.parse()?;
                options.poll = Duration::from_millis(ms.max(1));
            }
            Long("timeout-s") if run => {
                let secs: u64 = parser.value()?.parse()?;
                options.timeout = Some(Duration::from_secs(secs));
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if run {
        Ok(Command::Run(options))
    } else {
        Err("missing command: run (see --help)".into())
    }
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(Command::Run(options)) => options,
        Ok(Command::Version) => {
            println!("aetherv-guest {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("aetherv-guest: {e}");
            return ExitCode::from(2);
        }
    };
    let mut log = Log::open(&options.root);
    match agent::run(&options, &mut log) {
        Ok(Outcome::Applied) => {
            log.line("provisioning applied");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Failed(reason)) => {
            log.line(&format!("provisioning failed: {reason}"));
            ExitCode::FAILURE
        }
        Ok(Outcome::TimedOut) => ExitCode::FAILURE,
        Err(e) => {
            log.line(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}
