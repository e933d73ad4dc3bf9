//! The WinRM glue: a simulated host served by aetherv-winrm's WS-Man server.
//!
//! [`SimCommandHandler`] adapts the server's command I/O to [`HostRuntime::execute`];
//! [`FaultInterceptor`] turns the host's fault plan into the server's interceptor decisions;
//! outages run on a small controller task that owns a server handle (the interceptor only
//! sends it a message, so it never holds the server it is installed in).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aetherv_winrm::Secret;
use aetherv_winrm::server::{
    CommandHandler, CommandIo, CommandRequest, Intercept, Interceptor, OutputSink, RequestInfo,
    ServerConfig, ServerHandle, TlsConfig, WsmanServer,
};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::faults::HttpDecision;
use crate::host::{CommandStreams, HostRuntime};

/// Adapts the server's [`CommandIo`] to [`CommandStreams`].
struct ServerStreams {
    stdin: mpsc::Receiver<aetherv_winrm::server::StdinChunk>,
    stdin_done: bool,
    output: OutputSink,
}

impl CommandStreams for ServerStreams {
    async fn read_stdin(&mut self) -> Vec<u8> {
        let mut data = Vec::new();
        while !self.stdin_done {
            match self.stdin.recv().await {
                Some(chunk) => {
                    data.extend_from_slice(&chunk.data);
                    self.stdin_done = chunk.end;
                }
                None => self.stdin_done = true,
            }
        }
        data
    }

    async fn write_stdout(&mut self, data: Bytes) {
        self.output.stdout(data).await;
    }

    async fn write_stderr(&mut self, data: Bytes) {
        self.output.stderr(data).await;
    }
}

/// Runs the commands of one simulated host.
pub(crate) struct SimCommandHandler {
    pub(crate) runtime: Arc<HostRuntime>,
}

#[async_trait]
impl CommandHandler for SimCommandHandler {
    async fn run(&self, request: CommandRequest, io: CommandIo) -> i64 {
        debug!(host = %self.runtime.name, command = %request.command, "simulated command");
        let mut streams = ServerStreams {
            stdin: io.stdin,
            stdin_done: false,
            output: io.output,
        };
        self.runtime
            .execute(
                &request.command,
                &request.arguments,
                &request.environment,
                &mut streams,
            )
            .await
    }
}

/// Applies the host's fault plan to every request.
pub(crate) struct FaultInterceptor {
    runtime: Arc<HostRuntime>,
    outages: mpsc::UnboundedSender<(Duration, oneshot::Sender<()>)>,
}

#[async_trait]
impl Interceptor for FaultInterceptor {
    async fn intercept(&self, info: &RequestInfo) -> Intercept {
        tracing::trace!(host = %self.runtime.name, connection = info.connection, action = ?info.action, "request");
        // A frozen host accepts the request (the kernel still queues connections and bytes)
        // but answers nothing until it thaws.
        self.runtime.wait_thawed().await;
        let decision = self
            .runtime
            .lock_faults()
            .on_request(info.action.as_deref());
        match decision {
            HttpDecision::Continue => Intercept::Continue,
            HttpDecision::Delay(d) => Intercept::Delay(d),
            HttpDecision::Status(s) => Intercept::Status(s),
            HttpDecision::Fault(f) => Intercept::Fault(*f),
            HttpDecision::Drop => Intercept::DropConnection,
            HttpDecision::Outage(d) => {
                debug!(host = %self.runtime.name, seconds = d.as_secs_f64(), "simulated outage");
                // The controller takes the host down. Waiting for it means this request only
                // ends once the listener is closed (going down aborts this very connection),
                // so a client that sees the drop finds the host refusing connections.
                let (done, stopped) = oneshot::channel();
                if self.outages.send((d, done)).is_ok() {
                    let _ = stopped.await;
                }
                Intercept::DropConnection
            }
        }
    }
}

/// How to serve one host.
pub(crate) struct EndpointConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) user: String,
    pub(crate) password: Secret,
    pub(crate) tls: bool,
    pub(crate) allow_unencrypted: bool,
    pub(crate) max_receive_wait: Option<Duration>,
    #[cfg(feature = "kerberos")]
    pub(crate) kerberos: bool,
    pub(crate) require_channel_bindings: bool,
}

/// A running endpoint of one host.
pub(crate) struct Endpoint {
    handle: ServerHandle,
    controller: JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl Endpoint {
    /// Starts serving `runtime` with `config`.
    pub(crate) async fn start(
        runtime: Arc<HostRuntime>,
        fqdn: &str,
        config: EndpointConfig,
    ) -> Result<Self> {
        let server_error = |source| Error::Server {
            host: runtime.name.clone(),
            source,
        };
        let mut server = ServerConfig::new(config.listen, &config.user, config.password, fqdn);
        server.allow_unencrypted = config.allow_unencrypted;
        server.max_receive_wait = config.max_receive_wait;
        server.require_channel_bindings = config.require_channel_bindings;
        #[cfg(feature = "kerberos")]
        {
            server.kerberos = config.kerberos;
        }
        if config.tls {
            let short = runtime.name.as_str();
            server.tls =
                Some(TlsConfig::self_signed(&[fqdn, short, "localhost"]).map_err(server_error)?);
        }
        let handler = Arc::new(SimCommandHandler {
            runtime: Arc::clone(&runtime),
        });
        let handle = WsmanServer::bind(server, handler)
            .await
            .map_err(server_error)?;
        let (outages, mut requests) = mpsc::unbounded_channel::<(Duration, oneshot::Sender<()>)>();
        handle.set_interceptor(Some(Arc::new(FaultInterceptor {
            runtime: Arc::clone(&runtime),
            outages,
        })));
        let controller_handle = handle.clone();
        let host = runtime.name.clone();
        let controller = tokio::spawn(async move {
            while let Some((duration, done)) = requests.recv().await {
                controller_handle.go_down().await;
                let _ = done.send(());
                tokio::time::sleep(duration).await;
                if let Err(e) = controller_handle.come_up().await {
                    warn!(%host, error = %e, "simulated host could not come back up");
                }
            }
        });
        Ok(Self { handle, controller })
    }

    pub(crate) fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Stops the endpoint for good.
    pub(crate) async fn shutdown(self) {
        self.controller.abort();
        self.handle.clone().shutdown().await;
    }
}
