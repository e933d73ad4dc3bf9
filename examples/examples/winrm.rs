//! Run a command or a PowerShell script on a Windows host over WinRM.
//!
//! ```text
//! cargo run --release -p aetherv-examples --example winrm -- \
//!     --endpoint http://host:5985/wsman --auth ntlm --user 'DOMAIN\admin' --password-env WINRM_PASSWORD \
//!     [--encryption auto|always|never] [--ca-file PATH] [--pin-sha256 FINGERPRINT] [--insecure] \
//!     [--powershell] [--stdin-file PATH] [--repeat N [--interval SECONDS]] -- COMMAND [ARGS...]
//! ```
//!
//! With the `kerberos` feature, `--auth kerberos` (or `negotiate`: SPNEGO) uses the default
//! ticket cache (`KRB5CCNAME`) when neither a password nor a keytab is given, or
//! `--keytab PATH --user PRINCIPAL`, or `--user PRINCIPAL --password-env VAR`; `--spn`
//! overrides the service principal (default `HTTP/<endpoint host>`), `--realm` and `--kdc`
//! point at a realm without DNS, `--delegate` forwards the TGT to the host. `--ntlm-fallback`
//! (with `negotiate`, `--user` and `--password-env`) authenticates with NTLM when Kerberos
//! cannot start for the host (no ticket for its SPN, no KDC reachable).
//!
//! Over HTTPS the client sends TLS channel bindings (RFC 5929 `tls-server-end-point`) with
//! NTLM and Kerberos, as a host with `CbtHardeningLevel=Strict` requires.
//!
//! Remote stdout goes to stdout as it arrives, remote stderr (CLIXML decoded) to stderr, and the
//! process exits with the remote exit code. A local failure prints one `error:` line and exits
//! with 125. `--repeat N` runs the command N times on one client and then prints
//! `commands=N requests=R handshakes=H seconds=S` to stderr.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use aetherv_winrm::client::{CommandSpec, EncryptionMode, OutputChunk};
use aetherv_winrm::{Client, Secret};
use clap::{Parser, ValueEnum};

/// Exit status for failures on this side (connection, credentials, TLS, protocol).
const LOCAL_FAILURE: u8 = 125;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthKind {
    Basic,
    Ntlm,
    /// `Authorization: Kerberos` (feature `kerberos`).
    Kerberos,
    /// `Authorization: Negotiate` with SPNEGO carrying Kerberos (feature `kerberos`).
    Negotiate,
}

#[derive(Debug, Parser)]
#[command(about = "Run a command on a Windows host over WinRM", version)]
struct Args {
    /// WS-Man endpoint, e.g. http://host:5985/wsman or https://host:5986/wsman.
    #[arg(long)]
    endpoint: String,
    /// Authentication method.
    #[arg(long, value_enum)]
    auth: AuthKind,
    /// User name: user, DOMAIN\user or user@domain (Kerberos: the principal, user@REALM).
    #[arg(long)]
    user: Option<String>,
    /// Name of the environment variable that holds the password.
    #[arg(long)]
    password_env: Option<String>,
    /// Kerberos: client keytab for --user (instead of a password or the ticket cache).
    #[arg(long)]
    keytab: Option<std::path::PathBuf>,
    /// Kerberos: service principal (default HTTP/<endpoint host>).
    #[arg(long)]
    spn: Option<String>,
    /// Kerberos: realm (writes a private krb5.conf with --kdc).
    #[arg(long)]
    realm: Option<String>,
    /// Kerberos: KDC address (host or host:port) of --realm; repeatable.
    #[arg(long)]
    kdc: Vec<String>,
    /// Kerberos: delegate a forwardable TGT to the host (second hop).
    #[arg(long)]
    delegate: bool,
    /// Negotiate: when Kerberos cannot start for the host (no ticket for its SPN, no KDC),
    /// authenticate with NTLM as --user with the password of --password-env instead.
    #[arg(long)]
    ntlm_fallback: bool,
    /// Message encryption: auto (seal over HTTP), always, never.
    #[arg(long, default_value = "auto")]
    encryption: EncryptionMode,
    /// PEM file with CA certificates to trust for HTTPS.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Pin the host's certificate by its SHA-256 fingerprint, as `openssl x509 -noout
    /// -fingerprint -sha256` prints it (repeatable); only a pinned certificate is then accepted.
    #[arg(long = "pin-sha256")]
    pin_sha256: Vec<aetherv_winrm::transport::CertFingerprint>,
    /// Accept any TLS certificate (lab use only).
    #[arg(long)]
    insecure: bool,
    /// Treat the words after `--` as one PowerShell script.
    #[arg(long)]
    powershell: bool,
    /// Send this file's contents to the command's stdin.
    #[arg(long)]
    stdin_file: Option<std::path::PathBuf>,
    /// Run the command this many times on one client and print request statistics.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// With --repeat: wait this many seconds between two runs (the connection stays open;
    /// e.g. to let a Kerberos ticket expire).
    #[arg(long, default_value_t = 0)]
    interval: u64,
    /// The command and its arguments (or the PowerShell script with --powershell).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(LOCAL_FAILURE)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e)
            if e.kind() == clap::error::ErrorKind::DisplayHelp
                || e.kind() == clap::error::ErrorKind::DisplayVersion =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            return fail(first.trim_start_matches("error: "));
        }
    };
    #[cfg(feature = "kerberos")]
    if matches!(args.auth, AuthKind::Kerberos | AuthKind::Negotiate)
        && let Err(e) = kerberos_environment(&args)
    {
        return fail(e);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AETHERV_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(args))
}

/// Applies `--keytab`, `--realm` and `--kdc` to the Kerberos library's environment (the
/// program starts itself again with the variables set).
#[cfg(feature = "kerberos")]
fn kerberos_environment(args: &Args) -> Result<(), String> {
    use aetherv_winrm::kerberos::{KerberosSettings, ProcessEnv};
    if args.keytab.is_some() && args.password_env.is_some() {
        return Err("give --keytab or --password-env, not both".to_owned());
    }
    if args.keytab.is_some() && args.user.is_none() {
        return Err("--keytab needs --user PRINCIPAL".to_owned());
    }
    let keytab = match &args.keytab {
        Some(path) if !path.is_file() => {
            return Err(format!("keytab {} does not exist", path.display()));
        }
        Some(path) => Some(std::path::absolute(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let settings = KerberosSettings {
        realm: args.realm.clone(),
        kdcs: args.kdc.clone(),
        keytab,
        ..KerberosSettings::default()
    };
    let dir = std::env::temp_dir().join(format!("aetherv-winrm-krb5-{}", std::process::id()));
    let env = ProcessEnv::prepare(&settings, &dir).map_err(|e| e.to_string())?;
    env.reexec_if_needed().map_err(|e| e.to_string())
}

fn password_from(var: &str) -> Result<Secret, String> {
    match std::env::var(var) {
        Ok(p) => Ok(Secret::new(p)),
        Err(_) => Err(format!(
            "environment variable {var} (named by --password-env) is not set"
        )),
    }
}

async fn run(args: Args) -> ExitCode {
    let mut builder = Client::builder(&args.endpoint)
        .encryption(args.encryption)
        .accept_invalid_certs(args.insecure);
    builder = match args.auth {
        AuthKind::Basic | AuthKind::Ntlm => {
            let (Some(user), Some(var)) = (&args.user, &args.password_env) else {
                return fail("--auth basic and ntlm need --user and --password-env");
            };
            let password = match password_from(var) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            if matches!(args.auth, AuthKind::Basic) {
                builder.basic(user, password)
            } else {
                builder.ntlm(user, password)
            }
        }
        #[cfg(feature = "kerberos")]
        AuthKind::Kerberos | AuthKind::Negotiate => {
            use aetherv_winrm::kerberos::{KerberosAuth, KerberosScheme};
            let mut kerberos = KerberosAuth::new(args.user.clone());
            if let Some(var) = &args.password_env {
                let Some(user) = &args.user else {
                    return fail("--password-env needs --user PRINCIPAL");
                };
                match password_from(var) {
                    Ok(p) => {
                        if args.ntlm_fallback {
                            kerberos.ntlm_fallback = Some((user.clone(), p.clone()));
                        }
                        kerberos.password = Some(p);
                    }
                    Err(e) => return fail(e),
                }
            }
            if args.ntlm_fallback
                && (!matches!(args.auth, AuthKind::Negotiate) || kerberos.ntlm_fallback.is_none())
            {
                return fail("--ntlm-fallback needs --auth negotiate, --user and --password-env");
            }
            kerberos.spn = args.spn.clone();
            kerberos.realm = args.realm.clone();
            kerberos.delegate = args.delegate;
            if matches!(args.auth, AuthKind::Negotiate) {
                kerberos.scheme = KerberosScheme::Negotiate;
            }
            builder.kerberos(kerberos)
        }
        #[cfg(not(feature = "kerberos"))]
        AuthKind::Kerberos | AuthKind::Negotiate => {
            return fail("this build has no Kerberos support (build with --features kerberos)");
        }
    };
    if let Some(ca) = &args.ca_file {
        builder = builder.ca_file(ca);
    }
    for pin in &args.pin_sha256 {
        builder = builder.pin_sha256(*pin);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let stdin = match &args.stdin_file {
        Some(path) => match std::fs::read(path) {
            Ok(data) => Some(data),
            Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
        },
        None => None,
    };
    let spec = if args.powershell {
        CommandSpec::powershell(&args.command.join(" "))
    } else {
        let (command, rest) = match args.command.split_first() {
            Some(split) => split,
            None => return fail("no command given after --"),
        };
        CommandSpec::new(command).args(rest.iter().cloned())
    };
    let spec = match stdin {
        Some(data) => spec.stdin(data),
        None => spec,
    };

    let started = Instant::now();
    let mut exit_code = 0;
    for run in 0..args.repeat {
        if run > 0 && args.interval > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(args.interval)).await;
        }
        match run_once(&client, spec.clone()).await {
            Ok(code) => exit_code = code,
            Err(e) => return fail(e),
        }
    }
    if args.repeat > 1 {
        let stats = client.stats();
        eprintln!(
            "commands={} requests={} handshakes={} seconds={:.3}",
            args.repeat,
            stats.requests,
            stats.handshakes,
            started.elapsed().as_secs_f64()
        );
    }
    client.close().await;
    // Exit statuses are 8 bits on Unix; keep the low byte as a shell would.
    ExitCode::from((exit_code & 0xff) as u8)
}

/// Runs the command once, streaming stdout, and returns the remote exit code.
async fn run_once(client: &Client, spec: CommandSpec) -> aetherv_winrm::Result<i64> {
    let powershell = spec.is_powershell();
    let mut running = client.start(spec).await?;
    let mut stdout = std::io::stdout().lock();
    let mut stderr_buffer = Vec::new();
    while let Some(chunk) = running.next_chunk().await? {
        match chunk {
            OutputChunk::Stdout(data) => {
                let _ = stdout.write_all(&data);
                let _ = stdout.flush();
            }
            // PowerShell's CLIXML must be decoded as a whole; plain stderr streams through.
            OutputChunk::Stderr(data) if powershell => stderr_buffer.extend_from_slice(&data),
            OutputChunk::Stderr(data) => {
                let _ = std::io::stderr().write_all(&data);
            }
        }
    }
    if !stderr_buffer.is_empty() {
        let text = aetherv_winrm::clixml::decode(&stderr_buffer);
        let _ = std::io::stderr().write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = std::io::stderr().write_all(b"\n");
        }
    }
    Ok(running.exit_code().unwrap_or(0))
}
