//! An in-process fake WinRM host for client tests: a [`Connector`] whose connections run the
//! crate's own NTLM acceptor, unseal requests, answer shell requests from a scripted command
//! handler, and seal the answers — no sockets involved.

#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err
)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aetherv_winrm::Secret;
use aetherv_winrm::envelope::{
    self, CommandState, ReceiveOutput, Request, Response, Stream, StreamChunk, WsmanFault,
};
use aetherv_winrm::framing;
use aetherv_winrm::ntlm::{AcceptorIdentity, AcceptorInputs, NtlmAcceptor, NtlmSession};
use aetherv_winrm::transport::{Connector, HttpRequest, HttpResponse, Transport, TransportError};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use uuid::Uuid;

/// What a command produces: pages of output (one per Receive) and an exit code.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub pages: Vec<Vec<(Stream, Vec<u8>)>>,
    pub exit_code: i64,
    /// Receives answered with a TimedOut fault before the first page.
    pub timeouts_first: usize,
}

pub type Handler = dyn Fn(&str, &[String], &[u8]) -> Outcome + Send + Sync;

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub connections: AtomicU64,
    pub handshakes: AtomicU64,
    pub shells: AtomicU64,
    pub commands: AtomicU64,
    pub signals: AtomicU64,
    pub deletes: AtomicU64,
}

struct CommandRun {
    command: String,
    arguments: Vec<String>,
    stdin: Vec<u8>,
    stdin_done: bool,
    pages: Option<VecDeque<ReceiveOutput>>,
    timeouts_left: usize,
}

#[derive(Default)]
struct HostState {
    shells: HashMap<String, HashMap<String, CommandRun>>,
}

pub struct FakeHost {
    pub user: String,
    pub password: String,
    pub counters: Counters,
    handler: Box<Handler>,
    state: Mutex<HostState>,
    /// When set, plaintext SOAP is accepted after NTLM (AllowUnencrypted=true).
    pub allow_unencrypted: bool,
    /// How long a Receive waits before answering TimedOut (the OperationTimeout); tests that
    /// use it run with tokio's paused clock.
    pub receive_wait: std::time::Duration,
}

impl FakeHost {
    pub fn new(user: &str, password: &str, handler: Box<Handler>) -> Arc<Self> {
        Arc::new(Self {
            user: user.to_owned(),
            password: password.to_owned(),
            counters: Counters::default(),
            handler,
            state: Mutex::new(HostState::default()),
            allow_unencrypted: false,
            receive_wait: std::time::Duration::ZERO,
        })
    }

    /// Forgets every shell, as a host restart or an idle timeout would.
    pub fn drop_all_shells(&self) {
        self.state.lock().unwrap().shells.clear();
    }

    pub fn open_shells(&self) -> usize {
        self.state.lock().unwrap().shells.len()
    }

    pub fn count(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        f(&self.counters).load(Ordering::SeqCst)
    }

    fn handle(&self, request: Request) -> Result<Response, WsmanFault> {
        let mut state = self.state.lock().unwrap();
        match request {
            Request::Create(_) => {
                let id = Uuid::new_v4().to_string().to_uppercase();
                state.shells.insert(id.clone(), HashMap::new());
                self.counters.shells.fetch_add(1, Ordering::SeqCst);
                Ok(Response::Created { shell_id: id })
            }
            Request::Delete { shell_id } => {
                self.counters.deletes.fetch_add(1, Ordering::SeqCst);
                state
                    .shells
                    .remove(&shell_id)
                    .map(|_| Response::Deleted)
                    .ok_or_else(|| WsmanFault::invalid_selectors("unknown shell"))
            }
            Request::Command {
                shell_id,
                command,
                arguments,
                ..
            } => {
                let shell = state
                    .shells
                    .get_mut(&shell_id)
                    .ok_or_else(|| WsmanFault::invalid_selectors("unknown shell"))?;
                let id = Uuid::new_v4().to_string().to_uppercase();
                shell.insert(
                    id.clone(),
                    CommandRun {
                        command,
                        arguments,
                        stdin: Vec::new(),
                        stdin_done: false,
                        pages: None,
                        timeouts_left: 0,
                    },
                );
                self.counters.commands.fetch_add(1, Ordering::SeqCst);
                Ok(Response::CommandStarted { command_id: id })
            }
            Request::Send {
                shell_id,
                command_id,
                data,
                end,
                ..
            } => {
                let run = state
                    .shells
                    .get_mut(&shell_id)
                    .and_then(|s| s.get_mut(&command_id))
                    .ok_or_else(|| WsmanFault::invalid_selectors("unknown command"))?;
                run.stdin.extend_from_slice(&data);
                run.stdin_done |= end;
                Ok(Response::Sent)
            }
            Request::Receive {
                shell_id,
                command_id,
                ..
            } => {
                let run = state
                    .shells
                    .get_mut(&shell_id)
                    .and_then(|s| s.get_mut(&command_id))
                    .ok_or_else(|| WsmanFault::invalid_selectors("unknown command"))?;
                if run.pages.is_none() {
                    let outcome = (self.handler)(&run.command, &run.arguments, &run.stdin);
                    run.timeouts_left = outcome.timeouts_first;
                    let mut pages: VecDeque<ReceiveOutput> = outcome
                        .pages
                        .into_iter()
                        .map(|page| ReceiveOutput {
                            chunks: page
                                .into_iter()
                                .map(|(stream, data)| StreamChunk {
                                    stream,
                                    command_id: Some(command_id.clone()),
                                    data,
                                    end: false,
                                })
                                .collect(),
                            state: Some(CommandState {
                                command_id: Some(command_id.clone()),
                                done: false,
                                exit_code: None,
                            }),
                        })
                        .collect();
                    if pages.is_empty() {
                        pages.push_back(ReceiveOutput::default());
                    }
                    if let Some(last) = pages.back_mut() {
                        last.state = Some(CommandState {
                            command_id: Some(command_id.clone()),
                            done: true,
                            exit_code: Some(outcome.exit_code),
                        });
                    }
                    run.pages = Some(pages);
                }
                if run.timeouts_left > 0 {
                    run.timeouts_left -= 1;
                    return Err(WsmanFault::timed_out());
                }
                let pages = run.pages.as_mut().expect("pages");
                Ok(Response::Received(pages.pop_front().unwrap_or_default()))
            }
            Request::Signal {
                shell_id,
                command_id,
                ..
            } => {
                self.counters.signals.fetch_add(1, Ordering::SeqCst);
                let shell = state
                    .shells
                    .get_mut(&shell_id)
                    .ok_or_else(|| WsmanFault::invalid_selectors("unknown shell"))?;
                shell.remove(&command_id);
                Ok(Response::Signalled)
            }
        }
    }
}

/// Opens connections to a [`FakeHost`].
pub struct FakeConnector(pub Arc<FakeHost>);

impl FakeHost {
    pub fn connector(self: &Arc<Self>) -> Arc<dyn Connector> {
        Arc::new(FakeConnector(Arc::clone(self)))
    }
}

impl Connector for FakeConnector {
    fn connect(&self) -> Result<Arc<dyn Transport>, TransportError> {
        self.0.counters.connections.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(FakeConnection {
            host: Arc::clone(&self.0),
            state: Mutex::new(ConnState::default()),
        }))
    }
}

#[derive(Default)]
struct ConnState {
    acceptor: Option<NtlmAcceptor>,
    session: Option<NtlmSession>,
}

pub struct FakeConnection {
    host: Arc<FakeHost>,
    state: Mutex<ConnState>,
}

fn challenge_401(token: Option<&[u8]>) -> HttpResponse {
    HttpResponse {
        status: 401,
        www_authenticate: match token {
            Some(t) => vec![format!("Negotiate {}", STANDARD.encode(t))],
            None => vec!["Negotiate".to_owned(), "Kerberos".to_owned()],
        },
        content_type: None,
        body: Bytes::new(),
    }
}

impl FakeConnection {
    /// Answers one request; the flag says the answer is a TimedOut fault.
    fn respond(&self, request: HttpRequest) -> (HttpResponse, bool) {
        let mut timed_out = false;
        let response = self.respond_inner(request, &mut timed_out);
        (response, timed_out)
    }

    fn respond_inner(&self, request: HttpRequest, timed_out: &mut bool) -> HttpResponse {
        let host = &self.host;
        let mut conn = self.state.lock().unwrap();
        if let Some(auth) = request
            .authorization
            .as_ref()
            .map(|a| a.expose().to_owned())
        {
            let token = auth
                .strip_prefix("Negotiate ")
                .and_then(|t| STANDARD.decode(t).ok());
            let Some(token) = token else {
                return challenge_401(None);
            };
            // Message type is the u32 after the 8-byte signature.
            let kind = token.get(8).copied().unwrap_or(0);
            if kind == 1 {
                host.counters.handshakes.fetch_add(1, Ordering::SeqCst);
                let mut acceptor = NtlmAcceptor::new(
                    AcceptorIdentity {
                        netbios_domain: "LAB".into(),
                        netbios_computer: "HV01".into(),
                        dns_domain: "lab.example".into(),
                        dns_computer: "hv01.lab.example".into(),
                    },
                    AcceptorInputs {
                        server_challenge: rand_bytes(),
                        timestamp: 133_000_000_000_000_000,
                    },
                );
                let challenge = acceptor.challenge_message(&token).expect("challenge");
                conn.acceptor = Some(acceptor);
                conn.session = None;
                return challenge_401(Some(&challenge));
            }
            let Some(acceptor) = conn.acceptor.take() else {
                return challenge_401(None);
            };
            let password = host.password.clone();
            let user = host.user.clone();
            let lookup = move |_: &str, u: &str| {
                u.eq_ignore_ascii_case(&user)
                    .then(|| Secret::new(password.clone()))
            };
            match acceptor.accept(&token, &lookup) {
                Ok((_, session)) => conn.session = Some(session),
                Err(_) => return challenge_401(None),
            }
            if request.body.is_empty() {
                return HttpResponse {
                    status: 200,
                    ..HttpResponse::default()
                };
            }
        }
        let Some(session) = conn.session.as_mut() else {
            return challenge_401(None);
        };
        let encrypted = request
            .content_type
            .as_deref()
            .is_some_and(framing::is_encrypted);
        let xml = if encrypted {
            let body = framing::decode(&request.body).expect("framing");
            let mut data = body.sealed.to_vec();
            session
                .unseal_in_place(body.signature, &mut data)
                .expect("unseal");
            data
        } else if host.allow_unencrypted {
            request.body.to_vec()
        } else {
            // Windows (AllowUnencrypted=false) answers plaintext after NTLM with a fresh 401.
            conn.session = None;
            return challenge_401(None);
        };
        let (header, req) = envelope::parse_request(&xml).expect("parse request");
        let (status, reply) = match host.handle(req) {
            Ok(resp) => (
                200,
                envelope::build_response(header.message_id, Uuid::new_v4(), &resp),
            ),
            Err(fault) => (
                {
                    *timed_out = fault.is_timed_out();
                    500
                },
                envelope::build_fault(header.message_id, Uuid::new_v4(), &fault),
            ),
        };
        if encrypted {
            let mut data = reply.into_bytes();
            let len = data.len();
            let signature = session.seal_in_place(&mut data);
            HttpResponse {
                status,
                www_authenticate: vec![],
                content_type: Some(framing::content_type()),
                body: Bytes::from(framing::encode(&signature, &data, len)),
            }
        } else {
            HttpResponse {
                status,
                www_authenticate: vec![],
                content_type: Some("application/soap+xml;charset=UTF-8".into()),
                body: Bytes::from(reply),
            }
        }
    }
}

fn rand_bytes() -> [u8; 8] {
    let v = Uuid::new_v4().as_u128().to_le_bytes();
    let mut out = [0u8; 8];
    out.copy_from_slice(&v[..8]);
    out
}

#[async_trait]
impl Transport for FakeConnection {
    async fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.host.counters.requests.fetch_add(1, Ordering::SeqCst);
        // Yield so concurrent callers interleave as they would on a network.
        tokio::task::yield_now().await;
        let (response, timed_out) = self.respond(request);
        if timed_out && !self.host.receive_wait.is_zero() {
            tokio::time::sleep(self.host.receive_wait).await;
        }
        Ok(response)
    }
}

/// A handler that understands a few commands: `echo WORDS`, `exit N`, `cat` (stdin to stdout),
/// `big N` (N bytes of stdout over several pages), `slow` (two TimedOut Receives first),
/// `fail` (stderr + exit 1).
pub fn default_handler() -> Box<Handler> {
    Box::new(
        |command: &str, arguments: &[String], stdin: &[u8]| match command {
            "echo" => Outcome {
                pages: vec![vec![(
                    Stream::Stdout,
                    format!("{}\r\n", arguments.join(" ")).into_bytes(),
                )]],
                exit_code: 0,
                timeouts_first: 0,
            },
            "exit" => Outcome {
                exit_code: arguments.first().and_then(|a| a.parse().ok()).unwrap_or(0),
                ..Outcome::default()
            },
            "cat" => Outcome {
                pages: vec![vec![(Stream::Stdout, stdin.to_vec())]],
                ..Outcome::default()
            },
            "big" => {
                let n: usize = arguments.first().and_then(|a| a.parse().ok()).unwrap_or(0);
                let data: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                Outcome {
                    pages: data
                        .chunks(64 * 1024)
                        .map(|c| vec![(Stream::Stdout, c.to_vec())])
                        .collect(),
                    ..Outcome::default()
                }
            }
            "slow" => Outcome {
                pages: vec![vec![(Stream::Stdout, b"finally\r\n".to_vec())]],
                exit_code: 0,
                timeouts_first: 2,
            },
            "fail" => Outcome {
                pages: vec![vec![(Stream::Stderr, b"it broke\r\n".to_vec())]],
                exit_code: 1,
                timeouts_first: 0,
            },
            _ => Outcome {
                pages: vec![vec![(
                    Stream::Stderr,
                    format!("'{command}' is not recognized as an internal or external command\r\n")
                        .into_bytes(),
                )]],
                exit_code: 1,
                timeouts_first: 0,
            },
        },
    )
}
