//! The WS-Man server against the crate's own client over real loopback HTTP(S): NTLM with
//! sealing, Basic and NTLM over TLS, refusals, timeouts, chunked output, shell reuse and
//! ownership, quotas, signals, outages and fault injection.

#![cfg(feature = "server")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aetherv_winrm::auth::{Auth, ConnectionAuth};
use aetherv_winrm::client::{CommandSpec, EncryptionMode};
use aetherv_winrm::envelope::{
    self, EnvelopeError, Request, RequestHeader, Response, ResponseKind, ShellOptions, Signal,
    WsmanFault, action,
};
use aetherv_winrm::ntlm::AuthenticateInputs;
use aetherv_winrm::server::{
    CommandHandler, CommandIo, CommandRequest, Intercept, Interceptor, RequestInfo, ServerConfig,
    ServerHandle, TlsConfig, WsmanServer,
};
use aetherv_winrm::transport::{
    CertFingerprint, Connector, HttpConnector, HttpOptions, HttpResponse, TlsOptions, Transport,
    TransportError,
};
use aetherv_winrm::{Client, Error, Secret};
use async_trait::async_trait;
use bytes::Bytes;

const USER: &str = "admin";
const PASSWORD: &str = "S3cret!";
/// Every test finishes well within this.
const BOUND: Duration = Duration::from_secs(90);

/// Drops increment a counter: shows that a terminated handler's future was dropped.
struct DropFlag(Arc<AtomicU64>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Commands: `echo WORDS`, `cat` (stdin to stdout), `big N` (N bytes of stdout), `exit N`,
/// `fail` (stderr, exit 1), `sleep MS` (then "done"), `hang` (never ends), `whoami`.
#[derive(Default)]
struct TestHandler {
    dropped: Arc<AtomicU64>,
    hanging: Arc<AtomicU64>,
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[async_trait]
impl CommandHandler for TestHandler {
    async fn run(&self, request: CommandRequest, mut io: CommandIo) -> i64 {
        let arg = |i: usize| request.arguments.get(i).cloned().unwrap_or_default();
        match request.command.as_str() {
            "echo" => {
                io.output
                    .stdout(format!("{}\r\n", request.arguments.join(" ")))
                    .await;
                0
            }
            "cat" => {
                while let Some(chunk) = io.stdin.recv().await {
                    io.output.stdout(chunk.data).await;
                    if chunk.end {
                        break;
                    }
                }
                0
            }
            "big" => {
                let data = Bytes::from(pattern(arg(0).parse().unwrap_or(0)));
                for piece in data.chunks(64 * 1024) {
                    io.output.stdout(data.slice_ref(piece)).await;
                }
                0
            }
            "exit" => arg(0).parse().unwrap_or(0),
            "fail" => {
                io.output.stderr("it broke\r\n").await;
                1
            }
            "sleep" => {
                tokio::time::sleep(Duration::from_millis(arg(0).parse().unwrap_or(0))).await;
                io.output.stdout("done\r\n").await;
                0
            }
            "hang" => {
                let _flag = DropFlag(Arc::clone(&self.dropped));
                self.hanging.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                0
            }
            "whoami" => {
                io.output
                    .stdout(format!("{} {}", request.user, request.shell_id))
                    .await;
                0
            }
            other => {
                io.output
                    .stderr(format!(
                        "'{other}' is not recognized as an internal or external command\r\n"
                    ))
                    .await;
                1
            }
        }
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config() -> ServerConfig {
    ServerConfig::new(localhost(), USER, Secret::new(PASSWORD), "hv01.lab.example")
}

async fn start(config: ServerConfig) -> (ServerHandle, Arc<TestHandler>) {
    let handler = Arc::new(TestHandler::default());
    let server = WsmanServer::bind(config, handler.clone()).await.unwrap();
    (server, handler)
}

fn ntlm_client(server: &ServerHandle) -> aetherv_winrm::ClientBuilder {
    Client::builder(&server.endpoint()).ntlm(format!("LAB\\{USER}"), PASSWORD)
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("test timed out")
}

/// Records the actions of the requests it sees and applies `intercept` to `target`.
struct OnAction {
    target: Option<&'static str>,
    intercept: Intercept,
    actions: std::sync::Mutex<Vec<Option<String>>>,
}

impl OnAction {
    fn observe() -> Arc<Self> {
        Self::new(None, Intercept::Continue)
    }

    fn new(target: Option<&'static str>, intercept: Intercept) -> Arc<Self> {
        Arc::new(Self {
            target,
            intercept,
            actions: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn count(&self, action: &str) -> usize {
        let actions = self.actions.lock().unwrap();
        actions
            .iter()
            .filter(|a| a.as_deref() == Some(action))
            .count()
    }
}

#[async_trait]
impl Interceptor for OnAction {
    async fn intercept(&self, info: &RequestInfo) -> Intercept {
        assert!(info.remote.ip().is_loopback());
        assert!(info.connection >= 1);
        self.actions.lock().unwrap().push(info.action.clone());
        match self.target {
            Some(target) if info.action.as_deref() == Some(target) => self.intercept.clone(),
            _ => Intercept::Continue,
        }
    }
}

#[tokio::test]
async fn ntlm_over_http_seals_and_runs_commands() {
    bounded(async {
        let (server, _) = start(config()).await;
        let client = ntlm_client(&server).build().unwrap();
        assert!(client.encrypts());

        let out = client
            .run_command("echo", &["hello", "wörld", "日本語", "a<b>&'\""])
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "hello wörld 日本語 a<b>&'\"\r\n");
        assert_eq!(out.exit_code, 0);

        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let out = client
            .run(CommandSpec::new("cat").stdin(input.clone()))
            .await
            .unwrap();
        assert_eq!(out.stdout, input);

        let out = client.run_command("big", &["5000000"]).await.unwrap();
        assert_eq!(out.stdout, pattern(5_000_000));

        let out = client.run_command("exit", &["7"]).await.unwrap();
        assert_eq!(out.exit_code, 7);
        let out = client.run_command("exit", &["-1073741510"]).await.unwrap();
        assert_eq!(out.exit_code, -1_073_741_510);

        let out = client.run_command("fail", &[]).await.unwrap();
        assert_eq!(
            (out.exit_code, out.stderr_text().as_str()),
            (1, "it broke\r\n")
        );

        let out = client.run_command("whoami", &[]).await.unwrap();
        assert!(
            out.stdout_text().starts_with("admin "),
            "{}",
            out.stdout_text()
        );

        let c = server.counters();
        assert_eq!((c.connections, c.handshakes, c.shells), (1, 1, 1), "{c:?}");
        assert_eq!(c.commands, 7);
        client.close().await;
        assert_eq!(server.open_shells(), 0);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn one_handshake_one_shell_and_at_most_three_requests_per_command() {
    bounded(async {
        let (server, _) = start(config()).await;
        let client = ntlm_client(&server).build().unwrap();
        client.run_command("echo", &["warm"]).await.unwrap();
        let warm = server.counters();
        const N: u64 = 25;
        for i in 0..N {
            let out = client.run_command("exit", &[&i.to_string()]).await.unwrap();
            assert_eq!(out.exit_code, i as i64);
        }
        let after = server.counters();
        assert_eq!(after.handshakes, 1);
        assert_eq!(after.connections, 1);
        assert_eq!(after.shells, 1);
        assert_eq!(after.commands, N + 1);
        let per_command = (after.requests - warm.requests) as f64 / N as f64;
        assert!(per_command <= 3.0, "{per_command} requests per command");
        assert_eq!(after.requests, client.stats().requests);
    })
    .await;
}

#[tokio::test]
async fn wrong_password_is_refused() {
    bounded(async {
        let (server, _) = start(config()).await;
        let client = Client::builder(&server.endpoint())
            .ntlm("LAB\\admin", "wrong")
            .build()
            .unwrap();
        let err = client.run_command("echo", &["x"]).await.unwrap_err();
        assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
        assert!(!err.to_string().contains("wrong"));
        let c = server.counters();
        assert!(c.handshakes >= 1);
        assert_eq!(c.shells, 0);
    })
    .await;
}

#[tokio::test]
async fn plaintext_after_ntlm_is_refused_unless_allowed() {
    bounded(async {
        let (server, _) = start(config()).await;
        let client = ntlm_client(&server)
            .encryption(EncryptionMode::Never)
            .build()
            .unwrap();
        let err = client.run_command("echo", &["x"]).await.unwrap_err();
        // Windows answers unencrypted messages with 401, which clients report as refused
        // credentials (pywinrm: "the specified credentials were rejected by the server").
        assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
        assert_eq!(server.counters().shells, 0);

        let mut open = config();
        open.allow_unencrypted = true;
        let (server, _) = start(open).await;
        let client = ntlm_client(&server)
            .encryption(EncryptionMode::Never)
            .build()
            .unwrap();
        assert!(!client.encrypts());
        let out = client.run_command("echo", &["plain"]).await.unwrap();
        assert_eq!(out.stdout_text(), "plain\r\n");
        // A sealing client works against a permissive server too.
        let sealed = ntlm_client(&server).build().unwrap();
        let out = sealed.run_command("echo", &["sealed"]).await.unwrap();
        assert_eq!(out.stdout_text(), "sealed\r\n");
    })
    .await;
}

#[tokio::test]
async fn receive_times_out_until_output_arrives() {
    bounded(async {
        let (server, _) = start(config()).await;
        let observer = OnAction::observe();
        server.set_interceptor(Some(observer.clone()));
        let client = ntlm_client(&server)
            .operation_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let out = client.run_command("sleep", &["2500"]).await.unwrap();
        assert_eq!(out.stdout_text(), "done\r\n");
        assert!(started.elapsed() >= Duration::from_millis(2400));
        // At least two Receives timed out before the one that got the output.
        assert!(
            observer.count(action::RECEIVE) >= 3,
            "{:?}",
            observer.actions
        );

        // The server's cap shortens the wait below the client's OperationTimeout.
        let mut capped = config();
        capped.max_receive_wait = Some(Duration::from_millis(200));
        let (server, _) = start(capped).await;
        let observer = OnAction::observe();
        server.set_interceptor(Some(observer.clone()));
        let client = ntlm_client(&server).build().unwrap();
        let out = client.run_command("sleep", &["1000"]).await.unwrap();
        assert_eq!(out.stdout_text(), "done\r\n");
        assert!(
            observer.count(action::RECEIVE) >= 4,
            "{:?}",
            observer.actions
        );
    })
    .await;
}

#[tokio::test]
async fn output_is_chunked_to_fit_the_smaller_envelope_limit() {
    bounded(async {
        const SIZE: usize = 1 << 20;
        // The client's limit is the smaller one.
        let (server, _) = start(config()).await;
        let observer = OnAction::observe();
        server.set_interceptor(Some(observer.clone()));
        let client = ntlm_client(&server)
            .max_envelope_size(8192)
            .build()
            .unwrap();
        let out = client
            .run_command("big", &[&SIZE.to_string()])
            .await
            .unwrap();
        assert_eq!(out.stdout, pattern(SIZE));
        let receives = observer.count(action::RECEIVE);
        assert!(receives > SIZE / 8192, "{receives} receives");
        assert!(
            receives < SIZE / 4096,
            "{receives} receives: envelopes badly filled"
        );

        // The server's limit is the smaller one.
        let mut small = config();
        small.max_envelope_size = 16_384;
        let (server, _) = start(small).await;
        let observer = OnAction::observe();
        server.set_interceptor(Some(observer.clone()));
        let client = ntlm_client(&server).build().unwrap();
        let out = client
            .run_command("big", &[&SIZE.to_string()])
            .await
            .unwrap();
        assert_eq!(out.stdout, pattern(SIZE));
        let receives = observer.count(action::RECEIVE);
        assert!(receives > SIZE / 16_384, "{receives} receives");
        assert!(
            receives < SIZE / 8192,
            "{receives} receives: envelopes badly filled"
        );
    })
    .await;
}

#[tokio::test]
async fn signal_terminate_drops_the_handler() {
    bounded(async {
        let (server, handler) = start(config()).await;
        let client = ntlm_client(&server).build().unwrap();
        let err = client
            .run(CommandSpec::new("hang").deadline(Duration::from_millis(1500)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Deadline { .. }), "{err:?}");
        assert_eq!(handler.hanging.load(Ordering::SeqCst), 1);
        for _ in 0..200 {
            if handler.dropped.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(handler.dropped.load(Ordering::SeqCst), 1);
        // The shell survives and the client goes on.
        let out = client.run_command("echo", &["after"]).await.unwrap();
        assert_eq!(out.stdout_text(), "after\r\n");
        assert_eq!(server.open_shells(), 1);
    })
    .await;
}

#[tokio::test]
async fn outage_gives_transport_errors_and_recovery_reauthenticates() {
    bounded(async {
        let (server, _) = start(config()).await;
        let addr = server.local_addr();
        let client = ntlm_client(&server)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        client.run_command("echo", &["before"]).await.unwrap();

        // A request in flight when the host goes down fails.
        let in_flight = {
            let client = client.clone();
            tokio::spawn(async move { client.run_command("sleep", &["5000"]).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.go_down().await;
        let err = in_flight.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");

        // While down, connections are refused.
        let err = client.run_command("echo", &["down"]).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Transport {
                    source: TransportError::Connect(_),
                    ..
                }
            ),
            "{err:?}"
        );
        let shells = server.open_shells();
        assert!(shells >= 1, "shells are kept during the outage");

        server.come_up().await.unwrap();
        assert_eq!(server.local_addr(), addr);
        let out = client.run_command("echo", &["after"]).await.unwrap();
        assert_eq!(out.stdout_text(), "after\r\n");
        let c = server.counters();
        assert!(c.connections >= 2, "{c:?}");
        assert!(c.handshakes >= 2, "{c:?}");
        // Coming up twice is harmless.
        server.come_up().await.unwrap();
        server.clone().shutdown().await;
        assert!(server.come_up().await.is_err());
    })
    .await;
}

#[tokio::test]
async fn interceptor_delay_status_fault_and_drop() {
    bounded(async {
        let (server, _) = start(config()).await;
        let client = ntlm_client(&server)
            .operation_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        client.run_command("echo", &["warm"]).await.unwrap();

        let cases: Vec<(Intercept, Expectation)> = vec![
            (Intercept::Delay(Duration::from_secs(4)), |e| {
                matches!(
                    e,
                    Error::Transport {
                        source: TransportError::Timeout(_),
                        ..
                    }
                )
            }),
            (Intercept::Status(503), |e| {
                matches!(e, Error::HttpStatus { status: 503, .. })
            }),
            (Intercept::Fault(WsmanFault::access_denied()), |e| {
                e.fault().is_some_and(|f| {
                    f.is_access_denied() && f.machine.as_deref() == Some("hv01.lab.example")
                })
            }),
            (Intercept::DropConnection, |e| {
                matches!(
                    e,
                    Error::Transport {
                        source: TransportError::Io(_),
                        ..
                    }
                )
            }),
        ];
        for (intercept, expected) in cases {
            let interceptor = OnAction::new(Some(action::COMMAND), intercept.clone());
            server.set_interceptor(Some(interceptor.clone()));
            let err = client.run_command("echo", &["x"]).await.unwrap_err();
            assert!(expected(&err), "{intercept:?} gave {err:?}");
            assert!(interceptor.count(action::COMMAND) >= 1);
            server.set_interceptor(None);
            let out = client.run_command("echo", &["recovered"]).await.unwrap();
            assert_eq!(out.stdout_text(), "recovered\r\n", "after {intercept:?}");
        }
    })
    .await;
}

/// Checks that an error is the one an interception should cause.
type Expectation = fn(&Error) -> bool;

/// Writes the certificate where the client can read it.
fn write_ca(tls: &TlsConfig, tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "aetherv-winrm-server-test-{}-{tag}.pem",
        std::process::id()
    ));
    std::fs::write(&path, &tls.cert_pem).unwrap();
    path
}

#[tokio::test]
async fn basic_and_ntlm_over_https() {
    bounded(async {
        let tls = TlsConfig::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        let ca = write_ca(&tls, "https");
        let mut https = config();
        https.tls = Some(tls);
        let (server, _) = start(https).await;
        assert!(server.endpoint().starts_with("https://127.0.0.1:"));

        // Basic, trusting the certificate through a CA file.
        let client = Client::builder(&server.endpoint())
            .basic("LAB\\Admin", PASSWORD)
            .ca_file(&ca)
            .build()
            .unwrap();
        let out = client.run_command("echo", &["basic", "tls"]).await.unwrap();
        assert_eq!(out.stdout_text(), "basic tls\r\n");

        // Basic, accepting any certificate.
        let client = Client::builder(&server.endpoint())
            .basic("admin@lab.example", PASSWORD)
            .accept_invalid_certs(true)
            .build()
            .unwrap();
        let out = client.run_command("whoami", &[]).await.unwrap();
        assert!(out.stdout_text().starts_with("admin "));

        // Basic with a wrong password.
        let client = Client::builder(&server.endpoint())
            .basic("admin", "nope")
            .accept_invalid_certs(true)
            .build()
            .unwrap();
        let err = client.run_command("echo", &["x"]).await.unwrap_err();
        assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");

        // An untrusted certificate fails the TLS handshake.
        let client = Client::builder(&server.endpoint())
            .basic("admin", PASSWORD)
            .build()
            .unwrap();
        let err = client.run_command("echo", &["x"]).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Transport {
                    source: TransportError::Tls(_),
                    ..
                }
            ),
            "{err:?}"
        );

        // NTLM over TLS does not seal.
        let handshakes = server.counters().handshakes;
        let client = ntlm_client(&server).ca_file(&ca).build().unwrap();
        assert!(!client.encrypts());
        let out = client.run_command("echo", &["ntlm", "tls"]).await.unwrap();
        assert_eq!(out.stdout_text(), "ntlm tls\r\n");
        assert_eq!(server.counters().handshakes, handshakes + 1);
        // Sealing inside TLS works too.
        let client = ntlm_client(&server)
            .ca_file(&ca)
            .encryption(EncryptionMode::Always)
            .build()
            .unwrap();
        let out = client.run_command("echo", &["both"]).await.unwrap();
        assert_eq!(out.stdout_text(), "both\r\n");
        let _ = std::fs::remove_file(&ca);
    })
    .await;
}

/// Strict channel bindings (`CbtHardeningLevel=Strict`): our client sends them and passes; an
/// NTLM handshake without them, or with the bindings of another certificate, is refused.
#[tokio::test]
async fn strict_channel_bindings_over_https() {
    bounded(async {
        let tls = TlsConfig::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        let ours = tls.channel_bindings().unwrap();
        let mut strict = config();
        strict.tls = Some(tls);
        strict.require_channel_bindings = true;
        let (server, _) = start(strict).await;

        let client = ntlm_client(&server)
            .accept_invalid_certs(true)
            .build()
            .unwrap();
        let out = client.run_command("echo", &["bound"]).await.unwrap();
        assert_eq!(out.stdout_text(), "bound\r\n");
        assert_eq!(client.stats().handshakes, 1);

        let endpoint = server.endpoint();
        assert_eq!(
            ntlm_with_bindings(&endpoint, Some(ours.clone()), &ours).await,
            200
        );
        assert_eq!(ntlm_with_bindings(&endpoint, None, &ours).await, 401);
        let other = TlsConfig::self_signed(&["localhost"]).unwrap();
        let wrong = Some(other.channel_bindings().unwrap());
        assert_eq!(ntlm_with_bindings(&endpoint, wrong, &ours).await, 401);
    })
    .await;
}

/// One NTLM handshake by hand on a fresh HTTPS connection, sending `bindings`; returns the
/// status of the answer to AUTHENTICATE. Checks that the transport reports `expected`.
async fn ntlm_with_bindings(
    endpoint: &str,
    bindings: Option<aetherv_winrm::channel_bindings::ChannelBindings>,
    expected: &aetherv_winrm::channel_bindings::ChannelBindings,
) -> u16 {
    let connector = HttpConnector::new(HttpOptions {
        endpoint: endpoint.to_owned(),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        tls: TlsOptions {
            accept_invalid_certs: true,
            ..TlsOptions::default()
        },
    })
    .unwrap();
    let transport = connector.connect().unwrap();
    // The transport reports the bindings of the certificate it saw.
    assert_eq!(
        transport.channel_bindings().await.unwrap().as_ref(),
        Some(expected)
    );
    let mut auth = ConnectionAuth::new(
        Auth::Ntlm {
            username: USER.into(),
            password: Secret::new(PASSWORD),
        },
        false,
    );
    auth.set_channel_bindings(bindings);
    let negotiate = auth.negotiate_request().unwrap();
    let challenge = transport.post(negotiate).await.unwrap();
    assert_eq!(challenge.status, 401);
    let inputs = AuthenticateInputs::random(&mut rand::rngs::OsRng, SystemTime::now());
    let authenticate = auth.authenticate_request(&challenge, &inputs).unwrap();
    transport.post(authenticate).await.unwrap().status
}

/// A certificate and key made exactly as `openssl req -x509 -newkey rsa:2048 -nodes` makes
/// them (self-signed, `CA:TRUE`, no subject alternative name), and the SHA-256 fingerprint line
/// `openssl x509 -noout -fingerprint -sha256` prints for it.
fn openssl_self_signed(dir: &std::path::Path) -> (TlsConfig, std::path::PathBuf, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=winrm-host.lab.example"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command line tool");
    assert!(made.status.success(), "{made:?}");
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "openssl's default self-signed certificate is a CA certificate"
    );
    let fingerprint = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let tls = TlsConfig {
        cert_pem: std::fs::read_to_string(&cert).unwrap(),
        key_pem: std::fs::read_to_string(&key).unwrap(),
    };
    (
        tls,
        cert,
        String::from_utf8(fingerprint.stdout)
            .unwrap()
            .trim()
            .to_owned(),
    )
}

#[tokio::test]
async fn an_openssl_self_signed_certificate_is_trusted_from_the_ca_file_or_by_pin() {
    bounded(async {
        let dir = std::env::temp_dir().join(format!("aetherv-winrm-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (tls, ca, fingerprint) = openssl_self_signed(&dir);
        let mut https = config();
        https.tls = Some(tls);
        let (server, _) = start(https).await;
        let tls_error = |err: &Error| match err {
            Error::Transport {
                source: TransportError::Tls(text),
                ..
            } => text.clone(),
            other => panic!("expected a TLS error, got {other:?}"),
        };

        // The very certificate in the CA file: trusted whatever its constraints (and the name
        // it carries is not the address we connect to).
        let client = ntlm_client(&server).ca_file(&ca).build().unwrap();
        let out = client
            .run_command("echo", &["pinned", "file"])
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "pinned file\r\n");

        // Pinned by the fingerprint openssl prints, with no CA file at all.
        let pin: CertFingerprint = fingerprint.parse().unwrap();
        let client = ntlm_client(&server).pin_sha256(pin).build().unwrap();
        let out = client
            .run_command("echo", &["pinned", "hash"])
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "pinned hash\r\n");

        // Another fingerprint: refused, naming the certificate's.
        let other = CertFingerprint([7; 32]);
        let client = ntlm_client(&server).pin_sha256(other).build().unwrap();
        let err = client.run_command("echo", &["x"]).await.unwrap_err();
        let text = tls_error(&err);
        assert!(text.contains("matches no pinned fingerprint"), "{text}");
        assert!(text.contains(&pin.to_string()), "{text}");

        // A pin wins over a CA file that does not hold the certificate.
        let unrelated = TlsConfig::self_signed(&["127.0.0.1"]).unwrap();
        let unrelated_ca = write_ca(&unrelated, "unrelated");
        let client = ntlm_client(&server)
            .ca_file(&unrelated_ca)
            .pin_sha256(other)
            .build()
            .unwrap();
        let err = client.run_command("echo", &["x"]).await.unwrap_err();
        assert!(tls_error(&err).contains("matches no pinned fingerprint"));
        // Neither pinned nor in the CA file: the handshake fails.
        let client = ntlm_client(&server).ca_file(&unrelated_ca).build().unwrap();
        let err = client.run_command("echo", &["x"]).await.unwrap_err();
        tls_error(&err);
        let _ = std::fs::remove_file(&unrelated_ca);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn basic_over_plain_http_is_refused() {
    bounded(async {
        let (server, _) = start(config()).await;
        let client = Client::builder(&server.endpoint())
            .basic("admin", PASSWORD)
            .allow_basic_over_http(true)
            .build()
            .unwrap();
        let err = client.run_command("echo", &["x"]).await.unwrap_err();
        assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
    })
    .await;
}

/// A connection driven request by request, to reach what the client does not expose.
struct Raw {
    endpoint: String,
    transport: Arc<dyn Transport>,
    auth: ConnectionAuth,
}

impl Raw {
    /// Opens a connection and authenticates it with NTLM under `scheme` (`Negotiate`/`NTLM`).
    async fn connect(server: &ServerHandle, user: &str, password: &str, scheme: &str) -> Self {
        let endpoint = server.endpoint();
        let connector = HttpConnector::new(HttpOptions {
            endpoint: endpoint.clone(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            tls: TlsOptions::default(),
        })
        .unwrap();
        let transport = connector.connect().unwrap();
        let mut auth = ConnectionAuth::new(
            Auth::Ntlm {
                username: user.into(),
                password: Secret::new(password),
            },
            true,
        );
        let mut negotiate = auth.negotiate_request().unwrap();
        let header = negotiate.authorization.take().unwrap();
        let token = header.expose().split_once(' ').unwrap().1.to_owned();
        negotiate.authorization = Some(Secret::new(format!("{scheme} {token}")));
        let challenge = transport.post(negotiate).await.unwrap();
        assert_eq!(challenge.status, 401);
        assert_eq!(challenge.www_authenticate.len(), 1);
        assert!(
            challenge.www_authenticate[0].starts_with(&format!("{scheme} ")),
            "{:?}",
            challenge.www_authenticate
        );
        let inputs = AuthenticateInputs::random(&mut rand::rngs::OsRng, SystemTime::now());
        let authenticate = auth.authenticate_request(&challenge, &inputs).unwrap();
        let done = transport.post(authenticate).await.unwrap();
        auth.complete(&done).unwrap();
        assert_eq!(done.status, 200);
        assert!(done.body.is_empty());
        Self {
            endpoint,
            transport,
            auth,
        }
    }

    async fn post_xml(&mut self, xml: Vec<u8>) -> (HttpResponse, Vec<u8>) {
        let request = self.auth.wrap(xml).unwrap();
        let response = self.transport.post(request).await.unwrap();
        let body = if response.body.is_empty() {
            Vec::new()
        } else {
            self.auth.unwrap(&response).unwrap()
        };
        (response, body)
    }

    async fn call(&mut self, request: &Request) -> Result<Response, WsmanFault> {
        let mut header = RequestHeader::new(self.endpoint.clone(), uuid::Uuid::new_v4());
        header.operation_timeout = Duration::from_secs(5);
        let xml = envelope::build_request(&header, request).into_bytes();
        let (response, body) = self.post_xml(xml).await;
        match envelope::parse_response(ResponseKind::from(request), &body) {
            Ok(r) => {
                assert_eq!(response.status, 200);
                Ok(r)
            }
            Err(EnvelopeError::Fault(fault)) => {
                assert_eq!(response.status, 500);
                Err(*fault)
            }
            Err(e) => panic!("bad response ({}): {e}", response.status),
        }
    }

    async fn create(&mut self) -> Result<String, WsmanFault> {
        match self.call(&Request::Create(ShellOptions::default())).await? {
            Response::Created { shell_id } => Ok(shell_id),
            other => panic!("{other:?}"),
        }
    }

    async fn run(&mut self, shell_id: &str, command: &str) -> Result<String, WsmanFault> {
        let command_id = match self
            .call(&Request::Command {
                shell_id: shell_id.into(),
                command: command.into(),
                arguments: vec![],
                skip_cmd_shell: false,
            })
            .await?
        {
            Response::CommandStarted { command_id } => command_id,
            other => panic!("{other:?}"),
        };
        let mut stdout = Vec::new();
        loop {
            let response = self
                .call(&Request::Receive {
                    shell_id: shell_id.into(),
                    command_id: command_id.clone(),
                    stream: "stdout stderr".into(),
                })
                .await?;
            let Response::Received(output) = response else {
                panic!("{response:?}");
            };
            output.append_stream(envelope::Stream::Stdout, &mut stdout);
            if output.done() {
                break;
            }
        }
        self.call(&Request::Signal {
            shell_id: shell_id.into(),
            command_id,
            signal: Signal::Terminate,
        })
        .await?;
        Ok(String::from_utf8(stdout).unwrap())
    }
}

#[tokio::test]
async fn shells_belong_to_users_and_quotas_apply() {
    bounded(async {
        let mut cfg = config();
        cfg.users.push(("LAB\\other".into(), Secret::new("0ther!")));
        cfg.max_shells_per_user = 3;
        let (server, _) = start(cfg).await;

        // pywinrm (requests_ntlm) authenticates under the NTLM scheme.
        let mut first = Raw::connect(&server, "admin", PASSWORD, "NTLM").await;
        let shell = first.create().await.unwrap();
        assert_eq!(shell, shell.to_uppercase());
        assert_eq!(uuid::Uuid::parse_str(&shell).unwrap().to_string().len(), 36);

        // The same user on another connection (another spelling) uses the shell.
        let mut second = Raw::connect(&server, "ADMIN@lab.example", PASSWORD, "Negotiate").await;
        let out = second.run(&shell.to_lowercase(), "whoami").await.unwrap();
        assert_eq!(out, format!("admin {shell}"));
        assert_eq!(server.counters().connections, 2);

        // Another user does not see it.
        let mut other = Raw::connect(&server, "other", "0ther!", "Negotiate").await;
        let fault = other.run(&shell, "whoami").await.unwrap_err();
        assert!(fault.is_shell_gone(), "{fault:?}");
        assert_eq!(fault.wsman_code, Some(WsmanFault::INVALID_SELECTORS));
        assert!(fault.text().contains(&shell), "{fault:?}");

        // Quota: three shells per user, the fourth is refused; other users are not affected.
        let _two = first.create().await.unwrap();
        let three = first.create().await.unwrap();
        let fault = second.create().await.unwrap_err();
        assert!(fault.is_quota_exceeded(), "{fault:?}");
        assert_eq!(fault.wsman_code, Some(WsmanFault::QUOTA_MAX_SHELLS));
        other.create().await.unwrap();
        second
            .call(&Request::Delete {
                shell_id: three.clone(),
            })
            .await
            .unwrap();
        second.create().await.unwrap();

        // Unknown shells and commands.
        let fault = second
            .call(&Request::Delete { shell_id: three })
            .await
            .unwrap_err();
        assert!(fault.is_shell_gone());
        let fault = second
            .call(&Request::Receive {
                shell_id: shell.clone(),
                command_id: uuid::Uuid::new_v4().to_string(),
                stream: "stdout stderr".into(),
            })
            .await
            .unwrap_err();
        assert!(fault.is_shell_gone());
        assert!(fault.text().contains("command identifier"), "{fault:?}");
    })
    .await;
}

#[tokio::test]
async fn malformed_envelopes_get_sealed_soap_faults() {
    bounded(async {
        let (server, _) = start(config()).await;
        let mut raw = Raw::connect(&server, "admin", PASSWORD, "Negotiate").await;

        let (response, body) = raw.post_xml(b"<s:Envelope><not xml".to_vec()).await;
        assert_eq!(response.status, 500);
        assert!(aetherv_winrm::framing::is_encrypted(
            response.content_type.as_deref().unwrap()
        ));
        let fault = envelope::parse_fault(&body).unwrap();
        assert_eq!(fault.wsman_code, Some(WsmanFault::SCHEMA_VALIDATION));

        let mut header = RequestHeader::new(raw.endpoint.clone(), uuid::Uuid::new_v4());
        header.operation_timeout = Duration::from_secs(1);
        let xml = envelope::build_request(
            &header,
            &Request::Delete {
                shell_id: "X".into(),
            },
        )
        .replace(
            action::DELETE,
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get",
        );
        let (response, body) = raw.post_xml(xml.into_bytes()).await;
        assert_eq!(response.status, 500);
        let fault = envelope::parse_fault(&body).unwrap();
        assert_eq!(fault.subcode_name(), Some("ActionNotSupported"));

        // The connection is still good afterwards.
        let shell = raw.create().await.unwrap();
        assert_eq!(raw.run(&shell, "echo").await.unwrap(), "\r\n");

        // Other paths and methods.
        let base = server.endpoint().replace("/wsman", "/other");
        let client = reqwest::Client::new();
        let r = client.post(&base).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let r = client.get(server.endpoint()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405);
        let r = client
            .post(server.endpoint())
            .body("<x/>")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let offers: Vec<_> = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(offers, ["Negotiate", "NTLM"]);
    })
    .await;
}

#[tokio::test]
async fn delete_aborts_running_commands() {
    bounded(async {
        let (server, handler) = start(config()).await;
        let mut raw = Raw::connect(&server, "admin", PASSWORD, "Negotiate").await;
        let shell = raw.create().await.unwrap();
        for _ in 0..2 {
            raw.call(&Request::Command {
                shell_id: shell.clone(),
                command: "hang".into(),
                arguments: vec![],
                skip_cmd_shell: false,
            })
            .await
            .unwrap();
        }
        for _ in 0..200 {
            if handler.hanging.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        raw.call(&Request::Delete { shell_id: shell })
            .await
            .unwrap();
        for _ in 0..200 {
            if handler.dropped.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(handler.dropped.load(Ordering::SeqCst), 2);
        assert_eq!(server.open_shells(), 0);
    })
    .await;
}
