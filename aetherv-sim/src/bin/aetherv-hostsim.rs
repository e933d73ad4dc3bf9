//! `aetherv-hostsim`: serves a simulated Hyper-V fleet over WS-Man on loopback.
//!
//! ```text
//! AETHERV_SIM_PASSWORD=secret aetherv-hostsim --hosts 3 --vms-per-host 8 \
//!     --listen 127.0.0.1:0 --user Administrator --password-env AETHERV_SIM_PASSWORD
//! ```
//!
//! `--tls` serves HTTPS (self-signed certificates); `--require-channel-bindings` then refuses
//! clients that send no TLS channel bindings (`CbtHardeningLevel=Strict`).
//!
//! Prints one line per host, `host=NAME endpoint=URL`, then serves until SIGINT or SIGTERM.
//! On shutdown it prints each host's counters to stderr:
//! `host=NAME requests=R connections=C handshakes=H shells=S commands=K`.
//! Errors print one `error: ...` line and exit with code 2. Logs go to stderr (`RUST_LOG`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use aetherv_sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use clap::Parser;

/// mimalloc instead of the system allocator, as in the server: a simulated host builds every
/// VM's document for a full inventory, and glibc's malloc and free were a sixth of the
/// simulators' profile while a large fleet loaded (`benches/scale.py`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve a simulated Hyper-V fleet over WS-Management.
#[derive(Debug, Parser)]
#[command(name = "aetherv-hostsim", version, about)]
struct Args {
    /// Number of hosts (hv01, hv02, ...).
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// VMs generated on each host.
    #[arg(long, default_value_t = 4)]
    vms_per_host: usize,
    /// Number of clusters the hosts are split into (0: standalone hosts).
    #[arg(long)]
    clusters: Option<usize>,
    /// Listen address; port 0 gives each host a free port, port P gives P, P+1, ...
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// One IPv4 address per host instead of one port: host i listens on the --listen address
    /// plus i, on its port (e.g. --listen 127.1.0.1:5985 serves 127.1.0.1, 127.1.0.2, ...).
    #[arg(long)]
    ip_per_host: bool,
    /// User name the hosts accept.
    #[arg(long)]
    user: String,
    /// Name of the environment variable holding the password (never pass it as an argument).
    #[arg(long)]
    password_env: String,
    /// Serve HTTPS with a self-signed certificate per host (Basic and NTLM accepted).
    #[arg(long)]
    tls: bool,
    /// With --tls: require TLS channel bindings from every client (NTLM and Kerberos), like
    /// Windows' CbtHardeningLevel=Strict; a client that sends none gets 401.
    #[arg(long)]
    require_channel_bindings: bool,
    /// Accept unencrypted SOAP over HTTP after NTLM (AllowUnencrypted=true).
    #[arg(long)]
    allow_unencrypted: bool,
    /// Latency added to every request, in milliseconds.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Seed of the generated fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// DNS domain of the hosts.
    #[arg(long, default_value = "lab.example")]
    domain: String,
    /// Name of a VM whose guest will never answer provisioning (repeatable): a VM created
    /// with this name gets no guest agent, so a provisioning job waits for its key.
    #[arg(long = "silent-guest", value_name = "VM_NAME")]
    silent_guests: Vec<String>,
    /// Also accept Kerberos (`Kerberos` and `Negotiate`), with the service keys of this keytab
    /// (e.g. `HTTP/localhost@REALM`); message encryption as with NTLM.
    #[cfg(feature = "kerberos")]
    #[arg(long, value_name = "PATH")]
    keytab: Option<std::path::PathBuf>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_owned();
            return fail(first);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    #[cfg(feature = "kerberos")]
    if let Some(keytab) = &args.keytab {
        use aetherv_winrm::kerberos::{KerberosAcceptor, KerberosSettings, ProcessEnv};
        if !keytab.is_file() {
            return fail(format!("keytab {} does not exist", keytab.display()));
        }
        let keytab = match std::path::absolute(keytab) {
            Ok(path) => path,
            Err(e) => return fail(format!("keytab {}: {e}", keytab.display())),
        };
        let settings = KerberosSettings {
            acceptor_keytab: Some(keytab),
            ..KerberosSettings::default()
        };
        let env = match ProcessEnv::prepare(&settings, &std::env::temp_dir()) {
            Ok(env) => env,
            Err(e) => return fail(e),
        };
        if let Err(e) = env.reexec_if_needed() {
            return fail(e);
        }
        if let Err(e) = KerberosAcceptor::check_keytab() {
            return fail(e);
        }
    }
    let password = match std::env::var(&args.password_env) {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            return fail(format!(
                "environment variable {} is empty",
                args.password_env
            ));
        }
        Err(_) => {
            return fail(format!(
                "environment variable {} is not set",
                args.password_env
            ));
        }
    };
    if args.require_channel_bindings && !args.tls {
        return fail(
            "--require-channel-bindings needs --tls: channel bindings exist only over TLS",
        );
    }
    let spec = FleetSpec {
        hosts: args.hosts,
        vms_per_host: args.vms_per_host,
        clusters: args.clusters.unwrap_or(usize::from(args.hosts > 0)),
        seed: args.seed,
        domain: args.domain.clone(),
        ..FleetSpec::default()
    };
    let options = SimOptions {
        listen: args.listen,
        ip_per_host: args.ip_per_host,
        tls: args.tls,
        require_channel_bindings: args.require_channel_bindings,
        allow_unencrypted: args.allow_unencrypted,
        latency: args.latency_ms.map(Duration::from_millis),
        silent_guests: args.silent_guests.iter().cloned().collect(),
        #[cfg(feature = "kerberos")]
        kerberos: args.keytab.is_some(),
        ..SimOptions::default()
    };
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(e) => return fail(format!("cannot wait for signals: {e}")),
    };
    let fleet = match SimFleet::start(spec, Credentials::new(args.user, password), options).await {
        Ok(fleet) => fleet,
        Err(e) => return fail(e),
    };
    {
        let mut out = std::io::stdout().lock();
        for host in fleet.hosts() {
            if writeln!(out, "host={} endpoint={}", host.name(), host.endpoint()).is_err() {
                return fail("cannot write to stdout");
            }
        }
        if out.flush().is_err() {
            return fail("cannot write to stdout");
        }
    }
    if let Err(e) = shutdown.await {
        fleet.shutdown().await;
        return fail(format!("cannot wait for signals: {e}"));
    }
    for host in fleet.hosts() {
        let c = host.counters();
        eprintln!(
            "host={} requests={} connections={} handshakes={} shells={} commands={}",
            host.name(),
            c.requests,
            c.connections,
            c.handshakes,
            c.shells,
            c.commands
        );
    }
    fleet.shutdown().await;
    ExitCode::SUCCESS
}

/// Installs the SIGTERM and SIGINT handlers at once and returns what waits for either: a
/// signal that arrives as soon as the endpoint lines are printed still ends the simulator
/// gracefully.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    Ok(tokio::signal::ctrl_c())
}
