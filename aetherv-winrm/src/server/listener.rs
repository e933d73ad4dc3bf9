//! The tokio/hyper layer: accepting connections, reading and writing HTTP, outages.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::channel_bindings::ChannelBindings;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::connection::{ConnectionCore, Inbound, SoapRequest, Users};
use super::shells::{Limits, Observer, ShellTable};
use super::{
    CommandHandler, Intercept, Interceptor, RequestInfo, ServerConfig, ServerCounters, ServerError,
};
use crate::envelope::{self, EnvelopeError, WsmanFault};
use crate::http::{HttpRequest, HttpResponse};
use crate::ntlm::{AcceptorIdentity, AcceptorInputs};
use crate::secret::Secret;

/// Largest request body read (Windows' own limit, `MaxEnvelopeSizekb`, is far below).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Time a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// What Windows' HTTP.sys calls itself.
const SERVER_HEADER: &str = "Microsoft-HTTPAPI/2.0";

type Body = Full<Bytes>;

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
    handshakes: AtomicU64,
    shells: AtomicU64,
    commands: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Observer for Counters {
    fn shell_created(&self) {
        Self::bump(&self.shells);
    }

    fn command_started(&self) {
        Self::bump(&self.commands);
    }
}

/// What the connection tasks share.
struct Shared {
    users: Users,
    identity: AcceptorIdentity,
    allow_unencrypted: bool,
    #[cfg(feature = "kerberos")]
    kerberos: bool,
    tls: Option<TlsAcceptor>,
    /// The `tls-server-end-point` bindings of the certificate (HTTPS only).
    channel_bindings: Option<ChannelBindings>,
    require_channel_bindings: bool,
    table: ShellTable,
    counters: Arc<Counters>,
    interceptor: RwLock<Option<Arc<dyn Interceptor>>>,
}

/// The running accept loop.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct RunState {
    running: Option<Running>,
    shut_down: bool,
}

/// Owned by the handles; dropping the last handle stops the listener.
struct Control {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    https: bool,
    run: tokio::sync::Mutex<RunState>,
    /// The current accept loop's stop token, for `Drop` (which cannot lock asynchronously).
    stop: std::sync::Mutex<Option<CancellationToken>>,
}

impl Drop for Control {
    fn drop(&mut self) {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stop) = stop {
            stop.cancel();
        }
        self.shared.table.clear();
    }
}

/// Starts WS-Management endpoints.
#[derive(Debug, Clone, Copy)]
pub struct WsmanServer;

impl WsmanServer {
    /// Binds `config.listen` and starts serving; commands are run by `handler`.
    pub async fn bind(
        config: ServerConfig,
        handler: Arc<dyn CommandHandler>,
    ) -> Result<ServerHandle, ServerError> {
        if config.max_envelope_size < 8192 {
            return Err(ServerError::Config(
                "max_envelope_size must be at least 8192 bytes".to_owned(),
            ));
        }
        let tls = config.tls.as_ref().map(|t| t.acceptor()).transpose()?;
        let channel_bindings = config
            .tls
            .as_ref()
            .map(|t| t.channel_bindings())
            .transpose()?;
        let listener = listen(config.listen)?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let counters = Arc::new(Counters::default());
        let observer: Arc<dyn Observer> = counters.clone();
        let shared = Arc::new(Shared {
            users: Users::new(config.users),
            identity: config.identity,
            allow_unencrypted: config.allow_unencrypted,
            #[cfg(feature = "kerberos")]
            kerberos: config.kerberos,
            tls,
            channel_bindings,
            require_channel_bindings: config.require_channel_bindings,
            table: ShellTable::new(
                handler,
                Limits {
                    max_shells_per_user: config.max_shells_per_user,
                    max_envelope_size: config.max_envelope_size,
                    max_receive_wait: config.max_receive_wait,
                },
                observer,
            ),
            counters,
            interceptor: RwLock::new(None),
        });
        let https = shared.tls.is_some();
        let control = Control {
            shared,
            local_addr,
            https,
            run: tokio::sync::Mutex::new(RunState::default()),
            stop: std::sync::Mutex::new(None),
        };
        let handle = ServerHandle {
            control: Arc::new(control),
        };
        {
            let mut run = handle.control.run.lock().await;
            handle.start(&mut run, listener);
        }
        Ok(handle)
    }
}

/// Controls a running [`WsmanServer`]. Cheap to clone; dropping the last clone stops it.
#[derive(Clone)]
pub struct ServerHandle {
    control: Arc<Control>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("endpoint", &self.endpoint())
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.control.local_addr
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:5985/wsman` (or `https://...`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.control.https { "https" } else { "http" };
        format!("{scheme}://{}/wsman", self.control.local_addr)
    }

    /// What the server has done so far.
    pub fn counters(&self) -> ServerCounters {
        let c = &self.control.shared.counters;
        ServerCounters {
            requests: c.requests.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            handshakes: c.handshakes.load(Ordering::Relaxed),
            shells: c.shells.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
        }
    }

    /// Shells open now (all users).
    pub fn open_shells(&self) -> usize {
        self.control.shared.table.len()
    }

    /// Installs (or, with `None`, removes) the interceptor consulted for every request.
    pub fn set_interceptor(&self, interceptor: Option<Arc<dyn Interceptor>>) {
        let mut slot = self
            .control
            .shared
            .interceptor
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *slot = interceptor;
    }

    /// Simulates a host outage: stops listening (new connections are refused) and drops every
    /// open connection, requests in flight included. Shells and running commands are kept.
    pub async fn go_down(&self) {
        let mut run = self.control.run.lock().await;
        self.stop(&mut run).await;
    }

    /// Ends an outage: listens again on the same port. Does nothing while the server is up.
    pub async fn come_up(&self) -> Result<(), ServerError> {
        let mut run = self.control.run.lock().await;
        if run.shut_down {
            return Err(ServerError::ShutDown);
        }
        if run.running.is_some() {
            return Ok(());
        }
        let listener = listen(self.control.local_addr)?;
        self.start(&mut run, listener);
        Ok(())
    }

    /// Stops the server for good: closes the listener and every connection and deletes every
    /// shell, aborting the commands.
    pub async fn shutdown(self) {
        let mut run = self.control.run.lock().await;
        self.stop(&mut run).await;
        run.shut_down = true;
        self.control.shared.table.clear();
    }

    fn start(&self, run: &mut RunState, listener: TcpListener) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(
            Arc::clone(&self.control.shared),
            listener,
            stop.clone(),
        ));
        *self.control.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
        run.running = Some(Running { stop, task });
    }

    async fn stop(&self, run: &mut RunState) {
        if let Some(running) = run.running.take() {
            running.stop.cancel();
            // The loop closes the listener and waits for its connections to be dropped.
            let _ = running.task.await;
        }
        *self.control.stop.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A listening socket that can be re-bound right after an outage (`SO_REUSEADDR`).
fn listen(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let bind_error = |source| ServerError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_error)?;
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(bind_error)?;
    socket.bind(addr).map_err(bind_error)?;
    socket.listen(1024).map_err(bind_error)
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let id = Counters::bump(&shared.counters.connections);
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(Arc::clone(&shared), stream, remote, id));
                }
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    // Out of descriptors and the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve(shared: Arc<Shared>, stream: tokio::net::TcpStream, remote: SocketAddr, id: u64) {
    match shared.tls.clone() {
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(shared, tls, remote, id, true).await,
                Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%remote, "TLS handshake timed out"),
            }
        }
        None => serve_http(shared, stream, remote, id, false).await,
    }
}

async fn serve_http<I>(shared: Arc<Shared>, io: I, remote: SocketAddr, id: u64, tls: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let core = ConnectionCore::new(shared.identity.clone(), tls, shared.allow_unencrypted)
        .with_channel_bindings(
            if tls {
                shared.channel_bindings.clone()
            } else {
                None
            },
            shared.require_channel_bindings,
        );
    #[cfg(feature = "kerberos")]
    let core = core.with_kerberos(shared.kerberos);
    let core = Arc::new(tokio::sync::Mutex::new(core));
    let kill = CancellationToken::new();
    let conn = Conn {
        shared,
        core,
        kill: kill.clone(),
        remote,
        id,
    };
    let service = hyper::service::service_fn(move |request| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                debug!(%remote, error = %e, "connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket without an answer.
        () = kill.cancelled() => debug!(%remote, "connection dropped"),
    }
}

/// One connection's view of the server.
#[derive(Clone)]
struct Conn {
    shared: Arc<Shared>,
    core: Arc<tokio::sync::Mutex<ConnectionCore>>,
    kill: CancellationToken,
    remote: SocketAddr,
    id: u64,
}

fn bare_status(status: u16) -> HttpResponse {
    HttpResponse {
        status,
        ..HttpResponse::default()
    }
}

impl Conn {
    async fn handle(&self, request: hyper::Request<Incoming>) -> hyper::Response<Body> {
        let shared = &self.shared;
        Counters::bump(&shared.counters.requests);
        if !request.uri().path().eq_ignore_ascii_case("/wsman") {
            return to_hyper(bare_status(404), None);
        }
        if request.method() != Method::POST {
            return to_hyper(bare_status(405), Some(("allow", "POST")));
        }
        let headers = request.headers();
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let authorization = text(header::AUTHORIZATION).map(Secret::new);
        let content_type = text(header::CONTENT_TYPE);
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                let too_large = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return to_hyper(bare_status(if too_large { 413 } else { 400 }), None);
            }
        };
        let http = HttpRequest {
            authorization,
            content_type,
            body,
        };

        let inbound = {
            let mut core = self.core.lock().await;
            core.inbound(&http, &shared.users, || {
                AcceptorInputs::random(&mut rand::rngs::OsRng, SystemTime::now())
            })
        };
        drop(http);
        if let Inbound::Respond {
            negotiate: true, ..
        } = &inbound
        {
            Counters::bump(&shared.counters.handshakes);
        }
        let parsed = match &inbound {
            Inbound::Soap(soap) => Some(envelope::parse_request(&soap.xml)),
            Inbound::Respond { .. } => None,
        };
        let action = match (&parsed, &inbound) {
            (Some(Ok((_, request))), _) => Some(request.action().to_owned()),
            (Some(Err(_)), Inbound::Soap(soap)) => sniff(&soap.xml).action,
            _ => None,
        };

        let interceptor = shared
            .interceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(interceptor) = interceptor {
            let info = RequestInfo {
                connection: self.id,
                remote: self.remote,
                action,
            };
            match interceptor.intercept(&info).await {
                Intercept::Continue => {}
                Intercept::Delay(delay) => tokio::time::sleep(delay).await,
                Intercept::Status(status) => return to_hyper(bare_status(status), None),
                Intercept::Fault(fault) => {
                    let (relates_to, sealed) = match &inbound {
                        Inbound::Soap(soap) => (relates_to(&parsed, soap), soap.sealed),
                        Inbound::Respond { .. } => (uuid::Uuid::nil(), false),
                    };
                    let xml = envelope::build_fault(
                        relates_to,
                        uuid::Uuid::new_v4(),
                        &self.machine(fault),
                    );
                    let response = self.core.lock().await.outbound(500, xml, sealed);
                    return to_hyper(response, None);
                }
                Intercept::DropConnection => {
                    self.kill.cancel();
                    return std::future::pending().await;
                }
            }
        }

        let soap = match inbound {
            Inbound::Respond { response, .. } => return to_hyper(response, None),
            Inbound::Soap(soap) => soap,
        };
        let Some(parsed) = parsed else {
            return to_hyper(bare_status(500), None);
        };
        let (status, xml) = match parsed {
            Ok((header, request)) => {
                let now = tokio::time::Instant::now();
                match shared
                    .table
                    .handle(&soap.principal, &header, request, now)
                    .await
                {
                    Ok(response) => (
                        200,
                        envelope::build_response(
                            header.message_id,
                            uuid::Uuid::new_v4(),
                            &response,
                        ),
                    ),
                    Err(fault) => (
                        500,
                        envelope::build_fault(
                            header.message_id,
                            uuid::Uuid::new_v4(),
                            &self.machine(*fault),
                        ),
                    ),
                }
            }
            Err(error) => {
                let fault = match error {
                    EnvelopeError::UnsupportedAction(action) => {
                        WsmanFault::action_not_supported(&action)
                    }
                    other => WsmanFault::schema_validation(other.to_string()),
                };
                let relates_to = sniff(&soap.xml).message_id.unwrap_or_else(uuid::Uuid::nil);
                (
                    500,
                    envelope::build_fault(relates_to, uuid::Uuid::new_v4(), &self.machine(fault)),
                )
            }
        };
        let response = self.core.lock().await.outbound(status, xml, soap.sealed);
        to_hyper(response, None)
    }

    /// Stamps the fault with this host's name, as Windows does.
    fn machine(&self, fault: WsmanFault) -> WsmanFault {
        if fault.machine.is_some() {
            return fault;
        }
        let host = self.shared.identity.dns_computer.clone();
        fault.with_machine(host)
    }
}

fn relates_to(
    parsed: &Option<Result<(envelope::RequestHeader, envelope::Request), EnvelopeError>>,
    soap: &SoapRequest,
) -> uuid::Uuid {
    match parsed {
        Some(Ok((header, _))) => header.message_id,
        _ => sniff(&soap.xml).message_id.unwrap_or_else(uuid::Uuid::nil),
    }
}

/// Converts the sans-IO response to hyper's.
fn to_hyper(
    response: HttpResponse,
    extra: Option<(&'static str, &'static str)>,
) -> hyper::Response<Body> {
    let mut out = hyper::Response::new(Full::new(response.body));
    *out.status_mut() =
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER_HEADER));
    for value in response.www_authenticate {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::WWW_AUTHENTICATE, value);
        }
    }
    if let Some(content_type) = response.content_type
        && let Ok(value) = HeaderValue::from_str(&content_type)
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some((name, value)) = extra {
        headers.insert(name, HeaderValue::from_static(value));
    }
    out
}

/// `Action` and `MessageID` of an envelope the parser refused, when they can be found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sniffed {
    action: Option<String>,
    message_id: Option<uuid::Uuid>,
}

/// Scans the header of a (possibly invalid) envelope for `Action` and `MessageID`.
fn sniff(xml: &[u8]) -> Sniffed {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut out = Sniffed::default();
    let mut current: Option<&'static str> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                current = match e.local_name().as_ref() {
                    b"Action" => Some("Action"),
                    b"MessageID" => Some("MessageID"),
                    b"Body" => break,
                    _ => None,
                };
            }
            Ok(Event::Text(text)) => {
                let Ok(value) = text.decode() else { continue };
                let value = value.trim();
                match current {
                    Some("Action") if out.action.is_none() => out.action = Some(value.to_owned()),
                    Some("MessageID") if out.message_id.is_none() => {
                        let bare = value
                            .get(..5)
                            .filter(|p| p.eq_ignore_ascii_case("uuid:"))
                            .map_or(value, |_| &value[5..]);
                        out.message_id = uuid::Uuid::parse_str(bare).ok();
                    }
                    _ => {}
                }
            }
            Ok(Event::End(_)) => current = None,
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_action_and_message_id_of_broken_envelopes() {
        let xml = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header><a:Action s:mustUnderstand="true"> http://example/Frobnicate </a:Action><a:MessageID>uuid:0A1B2C3D-0000-4000-8000-000000000001</a:MessageID></s:Header><s:Body><broken"#;
        let s = sniff(xml);
        assert_eq!(s.action.as_deref(), Some("http://example/Frobnicate"));
        assert_eq!(
            s.message_id,
            Some(uuid::Uuid::parse_str("0a1b2c3d-0000-4000-8000-000000000001").unwrap())
        );
        assert_eq!(sniff(b"\xff\xfe garbage"), Sniffed::default());
    }
}
