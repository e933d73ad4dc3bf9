//! Protocol-core benchmarks for aetherv-winrm.
//!
//! - `envelope/*`: build + parse of one request and one response of each kind.
//! - `receive_decode/10MiB`: parsing the Receive responses that carry a 10 MiB stdout
//!   (throughput in bytes of stdout).
//! - `seal_sign/*`: NTLM seal + sign of one message, and unseal + verify (throughput).
//!
//! Run: `cargo bench -p aetherv-benches --bench winrm`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use aetherv_winrm::Secret;
use aetherv_winrm::envelope::{
    self, CommandState, ReceiveOutput, Request, RequestHeader, Response, ResponseKind,
    ShellOptions, Stream, StreamChunk,
};
use aetherv_winrm::ntlm::{
    AcceptorIdentity, AcceptorInputs, AuthenticateInputs, NtlmAcceptor, NtlmCredentials,
    NtlmInitiator, NtlmSession,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

fn header() -> RequestHeader {
    RequestHeader {
        to: "http://host.example.com:5985/wsman".to_owned(),
        message_id: Uuid::from_u128(0x1234),
        resource_uri: envelope::RESOURCE_URI_CMD.to_owned(),
        max_envelope_size: 153_600,
        operation_timeout: Duration::from_secs(20),
        locale: "en-US".to_owned(),
    }
}

fn requests() -> Vec<(&'static str, Request)> {
    let shell_id = "8A1C2E5B-1E0B-4C5F-9E13-0C2B1E6D7F10".to_owned();
    let command_id = "F3B9A7C1-3B0D-4E59-8D5E-2D8B7C6A5E4F".to_owned();
    vec![
        ("create", Request::Create(ShellOptions::default())),
        (
            "command",
            Request::Command {
                shell_id: shell_id.clone(),
                command: "powershell.exe".to_owned(),
                arguments: vec![
                    "-NoProfile".to_owned(),
                    "-EncodedCommand".to_owned(),
                    "V".repeat(2000),
                ],
                skip_cmd_shell: false,
            },
        ),
        (
            "send",
            Request::Send {
                shell_id: shell_id.clone(),
                command_id: command_id.clone(),
                stream: "stdin".to_owned(),
                data: vec![b'x'; 4096],
                end: true,
            },
        ),
        (
            "receive",
            Request::Receive {
                shell_id: shell_id.clone(),
                command_id: command_id.clone(),
                stream: "stdout stderr".to_owned(),
            },
        ),
        (
            "signal",
            Request::Signal {
                shell_id: shell_id.clone(),
                command_id,
                signal: envelope::Signal::Terminate,
            },
        ),
        ("delete", Request::Delete { shell_id }),
    ]
}

fn bench_envelopes(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    let h = header();
    for (name, request) in requests() {
        group.bench_function(format!("request_build_parse/{name}"), |b| {
            b.iter(|| {
                let xml = envelope::build_request(black_box(&h), black_box(&request));
                envelope::parse_request(xml.as_bytes()).unwrap()
            })
        });
    }
    let response = Response::Received(ReceiveOutput {
        chunks: vec![StreamChunk {
            stream: Stream::Stdout,
            command_id: Some("F3B9A7C1-3B0D-4E59-8D5E-2D8B7C6A5E4F".to_owned()),
            data: b"hello from the host\r\n".to_vec(),
            end: false,
        }],
        state: Some(CommandState {
            command_id: Some("F3B9A7C1-3B0D-4E59-8D5E-2D8B7C6A5E4F".to_owned()),
            done: true,
            exit_code: Some(0),
        }),
    });
    group.bench_function("response_build_parse/receive", |b| {
        b.iter(|| {
            let xml = envelope::build_response(Uuid::from_u128(1), Uuid::from_u128(2), &response);
            envelope::parse_response(ResponseKind::Receive, xml.as_bytes()).unwrap()
        })
    });
    group.finish();
}

/// 10 MiB of stdout split the way a host splits it: responses that fit MaxEnvelopeSize.
fn receive_responses() -> (Vec<String>, usize) {
    const TOTAL: usize = 10 * 1024 * 1024;
    const PER_RESPONSE: usize = 96 * 1024;
    let line = b"Name                 State   CPUUsage(%) MemoryAssigned(M) Uptime   Status\r\n";
    let stdout: Vec<u8> = line.iter().copied().cycle().take(TOTAL).collect();
    let responses = stdout
        .chunks(PER_RESPONSE)
        .enumerate()
        .map(|(i, data)| {
            let last = (i + 1) * PER_RESPONSE >= TOTAL;
            let response = Response::Received(ReceiveOutput {
                chunks: vec![StreamChunk {
                    stream: Stream::Stdout,
                    command_id: Some("F3B9A7C1-3B0D-4E59-8D5E-2D8B7C6A5E4F".to_owned()),
                    data: data.to_vec(),
                    end: last,
                }],
                state: Some(CommandState {
                    command_id: Some("F3B9A7C1-3B0D-4E59-8D5E-2D8B7C6A5E4F".to_owned()),
                    done: last,
                    exit_code: last.then_some(0),
                }),
            });
            envelope::build_response(Uuid::from_u128(1), Uuid::from_u128(i as u128), &response)
        })
        .collect();
    (responses, TOTAL)
}

fn bench_receive_decode(c: &mut Criterion) {
    let (responses, total) = receive_responses();
    let mut group = c.benchmark_group("receive_decode");
    group.throughput(Throughput::Bytes(total as u64));
    group.sample_size(20);
    group.bench_function("10MiB", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for xml in &responses {
                match envelope::parse_response(ResponseKind::Receive, xml.as_bytes()).unwrap() {
                    Response::Received(out) => {
                        bytes += out.chunks.iter().map(|c| c.data.len()).sum::<usize>()
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(bytes, total);
        })
    });
    group.finish();
}

/// A client and a server session established through a real in-process handshake.
fn sessions() -> (NtlmSession, NtlmSession) {
    let mut initiator = NtlmInitiator::new(
        NtlmCredentials::parse("LAB\\bench", Secret::new("P@ssw0rd!")),
        None,
    );
    let mut acceptor = NtlmAcceptor::new(
        AcceptorIdentity {
            netbios_domain: "LAB".to_owned(),
            netbios_computer: "HV01".to_owned(),
            dns_domain: "lab.example".to_owned(),
            dns_computer: "hv01.lab.example".to_owned(),
        },
        AcceptorInputs {
            server_challenge: [7; 8],
            timestamp: 133_000_000_000_000_000,
        },
    );
    let negotiate = initiator.negotiate_message();
    let challenge = acceptor.challenge_message(&negotiate).unwrap();
    let inputs = AuthenticateInputs {
        client_challenge: [9; 8],
        exported_session_key: [0x42; 16],
        timestamp: 133_000_000_000_000_000,
    };
    let (authenticate, client) = initiator.authenticate_message(&challenge, &inputs).unwrap();
    let (_, server) = acceptor
        .accept(&authenticate, &|_, _| Some(Secret::new("P@ssw0rd!")))
        .unwrap();
    (client, server)
}

fn bench_seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal_sign");
    for size in [16 * 1024usize, 1024 * 1024] {
        let payload = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("seal/{size}"), |b| {
            let (mut client, _) = sessions();
            let mut buf = payload.clone();
            b.iter(|| {
                buf.copy_from_slice(&payload);
                black_box(client.seal_in_place(&mut buf))
            })
        });
        // Each iteration's message is unsealed by the peer, so sequence numbers stay in step.
        group.bench_function(format!("seal_unseal/{size}"), |b| {
            let (mut client, mut server) = sessions();
            let mut buf = payload.clone();
            b.iter(|| {
                buf.copy_from_slice(&payload);
                let signature = client.seal_in_place(&mut buf);
                server.unseal_in_place(&signature, &mut buf).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_envelopes, bench_receive_decode, bench_seal);
criterion_main!(benches);
