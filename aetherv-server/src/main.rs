//! The aetherv server: REST API, web UI, job queue and inventory for a Hyper-V fleet.
//!
//! Configuration comes from the environment and `/run/secrets/` (see `CONFIGURATION.md`);
//! the command line only chooses between serving and `check-config` (see `cli`).
//! With no hosts configured (`HYPERV_HOSTS` and `HOSTS_FILE` unset), a build with the `demo`
//! feature starts the embedded demo fleet: simulated Hyper-V hosts served over real WinRM (NTLM
//! with message encryption) on loopback, managed exactly like real ones. A build without it
//! refuses to start.

use std::process::ExitCode;

use aetherv_server::cli::{self, Command};
use aetherv_server::config::{AuthConfig, Config, Mode};
use aetherv_server::listener::JsonErrorListener;
use aetherv_server::startup::Server;

/// mimalloc instead of the system allocator: with glibc's malloc, allocation and free were the
/// largest items of the server's profile while a large fleet loads, and the resident set grew
/// with fragmentation across threads (`benches/scale.py`, issue 19). A crate-provided
/// allocator; no `unsafe` here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("{}", cli::USAGE);
            eprintln!("Run 'aetherv-server --help' for more information.");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("{}", cli::version());
            return ExitCode::SUCCESS;
        }
        Command::CheckConfig | Command::Serve => {}
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return ExitCode::from(2);
        }
    };
    if command == Command::CheckConfig {
        print!("{}", cli::summary(&config));
        if config.mode.is_demo() {
            // Valid, but a pipeline that checks a production environment should notice.
            eprintln!(
                "warning: HYPERV_HOSTS, HOSTS_FILE: no hosts configured; this would start the DEMO fleet with authentication off"
            );
        }
        return ExitCode::SUCCESS;
    }
    // MIT krb5 reads its configuration, ticket cache and keytab locations from the process
    // environment: a fleet on Kerberos starts itself again with them set (once).
    #[cfg(feature = "kerberos")]
    if let Mode::Fleet(hosts) = &config.mode {
        match aetherv_server::startup::kerberos_environment(hosts) {
            Ok(Some(env)) => {
                if let Err(e) = env.reexec_if_needed() {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    aetherv_server::logging::init(config.log_format, &config.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: LISTEN_ADDR: cannot listen on {}: {e}",
                config.listen_addr
            );
            return ExitCode::from(2);
        }
    };
    let address = listener.local_addr().unwrap_or(config.listen_addr);
    let metrics_listener = match config.metrics_listen_addr {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: METRICS_LISTEN_ADDR: cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let server = match Server::start(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match &config.auth {
        AuthConfig::Disabled(_) => tracing::warn!(
            "AUTHENTICATION IS DISABLED: every caller is an administrator; never expose this server"
        ),
        AuthConfig::Oidc(settings) => tracing::info!(
            issuer = %settings.issuer_url,
            browser_login = settings.login.is_some(),
            "OIDC authentication enabled"
        ),
    }
    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    match &config.mode {
        #[cfg(feature = "demo")]
        Mode::Demo(demo) => demo_banner(&server, demo, &config.auth),
        // `Server::start` refuses demo mode in a build without the demo fleet.
        #[cfg(not(feature = "demo"))]
        Mode::Demo(_) => {}
        Mode::Fleet(hosts) => tracing::info!(hosts = hosts.len(), "managing the configured hosts"),
    }
    println!("aetherv is listening: web UI {url}/  API docs {url}/docs  (Ctrl-C stops)");
    tracing::info!(%address, "listening");
    let app = server.router();
    let jobs = server.state().jobs.clone();
    let metrics_task = metrics_listener.map(|listener| {
        let address = listener.local_addr().ok();
        tracing::info!(address = ?address, "serving /metrics on its own listener");
        let app = server.metrics_router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(JsonErrorListener::new(listener), app).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        })
    });
    let serve =
        axum::serve(JsonErrorListener::new(listener), app).with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Ends the event streams (and cancels running jobs, which clean up), so open browser
            // connections do not hold the shutdown.
            jobs.shutdown();
        });
    let result = serve.await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the HTTP server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Says loudly that this is the demo, and how to reach its simulated hosts.
#[cfg(feature = "demo")]
fn demo_banner(server: &Server, demo: &aetherv_server::config::DemoConfig, auth: &AuthConfig) {
    let hosts = server.demo_hosts();
    tracing::warn!(
        hosts = hosts.len(),
        "DEMO MODE: no HYPERV_HOSTS or HOSTS_FILE configured, managing an embedded simulated Hyper-V fleet on loopback"
    );
    let auth = if matches!(auth, AuthConfig::Disabled(_)) {
        "authentication off"
    } else {
        "authentication on"
    };
    println!("=== DEMO MODE: simulated Hyper-V hosts on loopback, {auth}; not for production ===");
    for (host, endpoint) in hosts {
        println!("host={host} endpoint={endpoint}");
    }
    println!(
        "demo WinRM user={} password: {}",
        aetherv_server::demo::DEMO_USER,
        if demo.password.is_some() {
            "from AETHERV_DEMO_PASSWORD"
        } else {
            "random (set AETHERV_DEMO_PASSWORD to choose one)"
        }
    );
}

/// Ctrl-C or SIGTERM (Kubernetes stops pods with SIGTERM).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
