//! The aetherv server: REST API, web UI, job queue and inventory for a Hyper-V fleet.
//!
//! Configuration comes from the environment and `/run/secrets/` (see `CONFIGURATION.md`).
//! With no hosts configured (`HYPERV_HOSTS` and `HOSTS_FILE` unset) it starts the embedded demo
//! fleet: simulated Hyper-V hosts served over real WinRM (NTLM with message encryption) on
//! loopback, managed exactly like real ones.

use std::process::ExitCode;

use aetherv_server::config::{AuthConfig, Config, Mode};
use aetherv_server::startup::{DEMO_USER, Server};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return ExitCode::from(2);
        }
    };
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
        Mode::Demo(_) => {
            tracing::info!(
                hosts = server.demo_hosts().len(),
                "demo mode: no HYPERV_HOSTS or HOSTS_FILE configured, managing an embedded simulated Hyper-V fleet on loopback"
            );
            for (host, endpoint) in server.demo_hosts() {
                println!("host={host} endpoint={endpoint}");
            }
            println!(
                "demo WinRM user={DEMO_USER} password: {}",
                if server.demo_password_chosen() {
                    "from AETHERV_DEMO_PASSWORD"
                } else {
                    "random (set AETHERV_DEMO_PASSWORD to choose one)"
                }
            );
        }
        Mode::Fleet(hosts) => tracing::info!(hosts = hosts.len(), "managing the configured hosts"),
    }
    println!("aetherv is listening: web UI {url}/  API docs {url}/docs  (Ctrl-C stops)");
    tracing::info!(%address, "listening");
    let app = server.router();
    let jobs = server.state().jobs.clone();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Ends the event streams (and cancels running jobs, which clean up), so open browser
        // connections do not hold the shutdown.
        jobs.shutdown();
    });
    let result = serve.await;
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
