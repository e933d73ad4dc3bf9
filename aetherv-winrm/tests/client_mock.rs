//! The client over a `mockall` transport: each test scripts the host's answers request by
//! request and checks what the client sent.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use aetherv_winrm::client::{CommandSpec, EncryptionMode};
use aetherv_winrm::envelope::{
    self, CommandState, ReceiveOutput, Request, Response, Stream, StreamChunk, WsmanFault,
};
use aetherv_winrm::transport::{
    HttpRequest, HttpResponse, MockConnector, MockTransport, Transport,
};
use aetherv_winrm::{Client, Error};
use bytes::Bytes;
use uuid::Uuid;

/// One scripted answer: what the request must be, and what the host says.
enum Reply {
    Ok(Response),
    Fault(WsmanFault),
    Raw(u16, &'static str),
}

type Log = Arc<Mutex<Vec<Request>>>;

fn scripted(replies: Vec<(&'static str, Reply)>) -> (Arc<MockConnector>, Log) {
    let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
    let log: Log = Arc::default();
    let mut transport = MockTransport::new();
    let (q, l) = (Arc::clone(&queue), Arc::clone(&log));
    transport
        .expect_post()
        .returning(move |request: HttpRequest| {
            let auth = request
                .authorization
                .as_ref()
                .map(|a| a.expose().to_owned());
            assert!(
                auth.is_some_and(|a| a.starts_with("Basic ")),
                "Basic on every request"
            );
            let (header, parsed) = envelope::parse_request(&request.body).expect("valid request");
            let (expected, reply) = q
                .lock()
                .unwrap()
                .pop_front()
                .expect("an unexpected request");
            let kind = match &parsed {
                Request::Create(_) => "create",
                Request::Delete { .. } => "delete",
                Request::Command { .. } => "command",
                Request::Send { .. } => "send",
                Request::Receive { .. } => "receive",
                Request::Signal { .. } => "signal",
            };
            assert_eq!(kind, expected, "request order");
            l.lock().unwrap().push(parsed);
            let (status, body) = match reply {
                Reply::Ok(r) => (
                    200,
                    envelope::build_response(header.message_id, Uuid::new_v4(), &r),
                ),
                Reply::Fault(f) => (
                    500,
                    envelope::build_fault(header.message_id, Uuid::new_v4(), &f),
                ),
                Reply::Raw(status, body) => (status, body.to_owned()),
            };
            Ok(HttpResponse {
                status,
                www_authenticate: vec![],
                content_type: Some("application/soap+xml;charset=UTF-8".to_owned()),
                body: Bytes::from(body),
            })
        });
    let transport: Arc<dyn Transport> = Arc::new(transport);
    let mut connector = MockConnector::new();
    connector
        .expect_connect()
        .returning(move || Ok(Arc::clone(&transport)));
    (Arc::new(connector), log)
}

fn client(connector: Arc<MockConnector>) -> Client {
    Client::builder("https://hv01.lab.example:5986/wsman")
        .basic("admin", "pw")
        .connector(connector)
        .build()
        .unwrap()
}

fn created(id: &str) -> Reply {
    Reply::Ok(Response::Created {
        shell_id: id.to_owned(),
    })
}

fn started(id: &str) -> Reply {
    Reply::Ok(Response::CommandStarted {
        command_id: id.to_owned(),
    })
}

fn output(cmd: &str, stdout: &[u8], exit: Option<i64>) -> Reply {
    Reply::Ok(Response::Received(ReceiveOutput {
        chunks: vec![StreamChunk {
            stream: Stream::Stdout,
            command_id: Some(cmd.to_owned()),
            data: stdout.to_vec(),
            end: exit.is_some(),
        }],
        state: Some(CommandState {
            command_id: Some(cmd.to_owned()),
            done: exit.is_some(),
            exit_code: exit,
        }),
    }))
}

fn signalled() -> Reply {
    Reply::Ok(Response::Signalled)
}

#[tokio::test]
async fn timed_out_receive_then_output() {
    let (connector, log) = scripted(vec![
        ("create", created("S1")),
        ("command", started("C1")),
        ("receive", Reply::Fault(WsmanFault::timed_out())),
        ("receive", Reply::Fault(WsmanFault::timed_out())),
        ("receive", output("C1", b"late output", Some(0))),
        ("signal", signalled()),
    ]);
    let out = client(connector).run_command("slow", &[]).await.unwrap();
    assert_eq!(out.stdout, b"late output");
    assert_eq!(log.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn output_split_across_many_receives() {
    let mut replies = vec![("create", created("S1")), ("command", started("C1"))];
    let mut expected = Vec::new();
    for i in 0..40 {
        let piece = format!("line {i} ✓\n");
        expected.extend_from_slice(piece.as_bytes());
        let exit = (i == 39).then_some(7);
        replies.push(("receive", output("C1", piece.as_bytes(), exit)));
    }
    replies.push(("signal", signalled()));
    let (connector, _) = scripted(replies);
    let out = client(connector).run_command("many", &[]).await.unwrap();
    assert_eq!(out.stdout, expected);
    assert_eq!(out.exit_code, 7);
}

#[tokio::test]
async fn shell_gone_then_recreated() {
    let (connector, log) = scripted(vec![
        ("create", created("S1")),
        ("command", started("C1")),
        ("receive", output("C1", b"1", Some(0))),
        ("signal", signalled()),
        (
            "command",
            Reply::Fault(WsmanFault::invalid_selectors("shell S1 not found")),
        ),
        ("create", created("S2")),
        ("command", started("C2")),
        ("receive", output("C2", b"2", Some(0))),
        ("signal", signalled()),
    ]);
    let client = client(connector);
    assert_eq!(client.run_command("a", &[]).await.unwrap().stdout, b"1");
    assert_eq!(client.run_command("b", &[]).await.unwrap().stdout, b"2");
    let log = log.lock().unwrap();
    match &log[6] {
        Request::Command {
            shell_id, command, ..
        } => {
            assert_eq!(shell_id, "S2");
            assert_eq!(command, "b");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn faults_keep_their_code_and_message() {
    let fault = WsmanFault {
        soap_code: "s:Sender".to_owned(),
        subcode: Some("w:AccessDenied".to_owned()),
        reason: "Access is denied.".to_owned(),
        wsman_code: Some(5),
        message: Some("Zugriff verweigert".to_owned()),
        machine: Some("hv01.lab.example".to_owned()),
    };
    let (connector, _) = scripted(vec![("create", Reply::Fault(fault.clone()))]);
    let err = client(connector).run_command("x", &[]).await.unwrap_err();
    let got = err.fault().expect("a fault error");
    assert_eq!(got.wsman_code, Some(5));
    assert_eq!(got.message.as_deref(), Some("Zugriff verweigert"));
    assert!(err.to_string().contains("hv01.lab.example:5986"), "{err}");
}

#[tokio::test]
async fn garbage_from_the_host_is_a_typed_error() {
    let (connector, _) = scripted(vec![("create", Reply::Raw(200, "<html>not soap"))]);
    let err = client(connector).run_command("x", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Envelope { .. }), "{err:?}");

    let (connector, _) = scripted(vec![("create", Reply::Raw(503, "Service Unavailable"))]);
    let err = client(connector).run_command("x", &[]).await.unwrap_err();
    assert!(
        matches!(&err, Error::HttpStatus { status: 503, detail, .. } if detail.contains("Unavailable")),
        "{err:?}"
    );
}

#[tokio::test]
async fn basic_credentials_refused_is_authentication_failed() {
    let (connector, _) = scripted(vec![("create", Reply::Raw(401, ""))]);
    let err = client(connector).run_command("x", &[]).await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
    assert!(!err.to_string().contains("pw"));
}

#[tokio::test]
async fn stdin_is_sent_in_envelope_sized_pieces() {
    let (connector, log) = scripted(vec![
        ("create", created("S1")),
        ("command", started("C1")),
        ("send", Reply::Ok(Response::Sent)),
        ("send", Reply::Ok(Response::Sent)),
        ("receive", output("C1", b"", Some(0))),
        ("signal", signalled()),
    ]);
    let client = Client::builder("https://hv01:5986/wsman")
        .basic("admin", "pw")
        .max_envelope_size(65_536)
        .connector(connector)
        .build()
        .unwrap();
    let input = vec![b'z'; 60_000];
    client
        .run(CommandSpec::new("cat").stdin(input.clone()))
        .await
        .unwrap();
    let log = log.lock().unwrap();
    let mut sent = Vec::new();
    let mut ends = Vec::new();
    for r in log.iter() {
        if let Request::Send { data, end, .. } = r {
            sent.extend_from_slice(data);
            ends.push(*end);
        }
    }
    assert_eq!(sent, input);
    assert_eq!(ends, vec![false, true]);
}

#[test]
fn configuration_errors_are_caught_at_build() {
    let basic_http = Client::builder("http://hv01:5985/wsman")
        .basic("a", "b")
        .build();
    assert!(
        matches!(&basic_http, Err(Error::Config(m)) if m.contains("Basic")),
        "{basic_http:?}"
    );
    assert!(
        Client::builder("http://hv01:5985/wsman")
            .basic("a", "b")
            .allow_basic_over_http(true)
            .build()
            .is_ok()
    );
    let basic_sealed = Client::builder("https://hv01:5986/wsman")
        .basic("a", "b")
        .encryption(EncryptionMode::Always)
        .build();
    assert!(matches!(basic_sealed, Err(Error::Config(_))));
    assert!(matches!(
        Client::builder("hv01").ntlm("a", "b").build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Client::builder("http://hv01:5985/wsman").build(),
        Err(Error::Config(_))
    ));
    let ok = Client::builder("http://hv01:5985")
        .ntlm("a", "b")
        .build()
        .unwrap();
    assert_eq!(ok.endpoint(), "http://hv01:5985/wsman");
    assert!(ok.encrypts());
    let https = Client::builder("https://hv01:5986/wsman")
        .ntlm("a", "b")
        .build()
        .unwrap();
    assert!(!https.encrypts());
    let debug = format!("{:?}", Client::builder("http://h").ntlm("u", "hunter2"));
    assert!(!debug.contains("hunter2"), "{debug}");
}
