//! The client against an in-process fake host that runs the crate's NTLM acceptor: handshake
//! counts, sealing, shell reuse and recycling, stdin, long output, timeouts, concurrency.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use aetherv_winrm::client::{CommandSpec, EncryptionMode};
use aetherv_winrm::{Client, Error};
use support::{FakeHost, default_handler};

fn client(host: &Arc<FakeHost>, password: &str) -> aetherv_winrm::client::ClientBuilder {
    Client::builder("http://hv01.lab.example:5985/wsman")
        .ntlm("LAB\\admin", password)
        .connector(host.connector())
}

fn host() -> Arc<FakeHost> {
    FakeHost::new("admin", "S3cret!", default_handler())
}

#[tokio::test]
async fn one_handshake_and_at_most_three_requests_per_command() {
    let host = host();
    let client = client(&host, "S3cret!").build().unwrap();
    assert!(client.encrypts(), "auto mode seals over plain HTTP");

    let out = client
        .run_command("echo", &["hello", "wörld"])
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "hello wörld\r\n");
    assert_eq!(out.exit_code, 0);
    let warm = client.stats();
    assert_eq!(warm.handshakes, 1);
    assert_eq!(warm.connections, 1);
    assert_eq!(warm.shells, 1);

    const N: u64 = 50;
    for i in 0..N {
        let out = client.run_command("exit", &[&i.to_string()]).await.unwrap();
        assert_eq!(out.exit_code, i as i64);
    }
    let after = client.stats();
    assert_eq!(after.handshakes, 1, "exactly one handshake per connection");
    assert_eq!(after.shells, 1, "the shell is reused");
    let per_command = (after.requests - warm.requests) as f64 / N as f64;
    assert!(per_command <= 3.0, "{per_command} requests per command");
    assert_eq!(host.count(|c| &c.handshakes), 1);
    assert_eq!(host.count(|c| &c.requests), after.requests);
}

#[tokio::test]
async fn wrong_password_is_refused_with_a_clear_error() {
    let host = host();
    let client = client(&host, "wrong").build().unwrap();
    let err = client.run_command("echo", &["x"]).await.unwrap_err();
    match &err {
        Error::AuthenticationFailed { user, .. } => assert_eq!(user, "LAB\\admin"),
        other => panic!("expected AuthenticationFailed, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("LAB\\\\admin") || text.contains("LAB\\admin"),
        "{text}"
    );
    assert!(
        !text.contains("wrong"),
        "the password must not appear: {text}"
    );
}

#[tokio::test]
async fn stdin_and_long_output_cross_the_sealed_channel() {
    let host = host();
    let client = client(&host, "S3cret!").build().unwrap();
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = client
        .run(CommandSpec::new("cat").stdin(input.clone()))
        .await
        .unwrap();
    assert_eq!(out.stdout, input);

    let out = client.run_command("big", &["1000000"]).await.unwrap();
    assert_eq!(out.stdout.len(), 1_000_000);
    assert!(out.stdout.starts_with(b"abcdefghijklmnopqrstuvwxyz"));
}

#[tokio::test]
async fn timed_out_receives_are_polled_again() {
    let host = host();
    let client = client(&host, "S3cret!").build().unwrap();
    let out = client.run_command("slow", &[]).await.unwrap();
    assert_eq!(out.stdout_text(), "finally\r\n");
}

#[tokio::test]
async fn failing_command_returns_stderr_and_exit_code() {
    let host = host();
    let client = client(&host, "S3cret!").build().unwrap();
    let out = client.run_command("nonexistent-tool", &[]).await.unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(out.stderr_text().contains("is not recognized"));
}

#[tokio::test]
async fn shell_is_recreated_when_the_host_forgets_it() {
    let host = host();
    let client = client(&host, "S3cret!").build().unwrap();
    client.run_command("echo", &["one"]).await.unwrap();
    host.drop_all_shells();
    let out = client.run_command("echo", &["two"]).await.unwrap();
    assert_eq!(out.stdout_text(), "two\r\n");
    assert_eq!(client.stats().shells, 2);
}

#[tokio::test]
async fn shell_is_recycled_after_the_configured_number_of_commands() {
    let host = host();
    let client = client(&host, "S3cret!")
        .max_commands_per_shell(3)
        .build()
        .unwrap();
    for _ in 0..7 {
        client.run_command("exit", &["0"]).await.unwrap();
    }
    assert_eq!(client.stats().shells, 3);
    assert_eq!(host.count(|c| &c.deletes), 2);
    assert_eq!(host.open_shells(), 1);
    client.close().await;
    assert_eq!(host.open_shells(), 0);
}

#[tokio::test]
async fn concurrent_callers_share_a_bounded_pool() {
    let host = host();
    let client = client(&host, "S3cret!").max_shells(2).build().unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.run_command("echo", &[&format!("n{i}")]).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.await.unwrap().unwrap();
        assert_eq!(out.stdout_text(), format!("n{i}\r\n"));
    }
    let stats = client.stats();
    assert!(stats.connections <= 2, "{stats:?}");
    assert_eq!(stats.handshakes, stats.connections);
    assert!(stats.shells <= 2);
}

#[tokio::test]
async fn unencrypted_mode_sends_plain_soap_after_ntlm() {
    let mut host = FakeHost::new("admin", "S3cret!", default_handler());
    Arc::get_mut(&mut host).unwrap().allow_unencrypted = true;
    let client = client(&host, "S3cret!")
        .encryption(EncryptionMode::Never)
        .build()
        .unwrap();
    assert!(!client.encrypts());
    let out = client.run_command("echo", &["plain"]).await.unwrap();
    assert_eq!(out.stdout_text(), "plain\r\n");
}

#[tokio::test]
async fn plaintext_is_refused_by_a_host_that_requires_encryption() {
    let host = host();
    let client = client(&host, "S3cret!")
        .encryption(EncryptionMode::Never)
        .build()
        .unwrap();
    let err = client.run_command("echo", &["x"]).await.unwrap_err();
    assert!(
        matches!(&err, Error::AuthenticationFailed { detail, .. } if detail.contains("requires message encryption")),
        "{err:?}"
    );
}

fn hanging_host() -> Arc<FakeHost> {
    let default = default_handler();
    let mut host = FakeHost::new(
        "admin",
        "S3cret!",
        Box::new(move |command: &str, args: &[String], stdin: &[u8]| {
            if command == "hang" {
                support::Outcome {
                    timeouts_first: usize::MAX,
                    ..Default::default()
                }
            } else {
                default(command, args, stdin)
            }
        }),
    );
    Arc::get_mut(&mut host).unwrap().receive_wait = Duration::from_secs(20);
    host
}

#[tokio::test(start_paused = true)]
async fn deadline_terminates_a_command_that_never_finishes() {
    let host = hanging_host();
    let client = client(&host, "S3cret!").build().unwrap();
    let err = client
        .run(CommandSpec::new("hang").deadline(Duration::from_secs(50)))
        .await;
    match err {
        Err(Error::Deadline { seconds, .. }) => assert_eq!(seconds, 50.0),
        other => panic!("expected a deadline error, got {other:?}"),
    }
    // The command was terminated on the host, on a fresh connection because the Receive in
    // flight was abandoned.
    assert_eq!(host.count(|c| &c.signals), 1);
    assert_eq!(client.stats().connections, 2);
    let out = client
        .run_command("echo", &["still", "usable"])
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "still usable\r\n");
}

#[tokio::test(start_paused = true)]
async fn cancellation_terminates_the_command() {
    let host = hanging_host();
    let client = client(&host, "S3cret!").build().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        trigger.cancel();
    });
    let err = client
        .run(CommandSpec::new("hang").cancel_token(token))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    assert_eq!(host.count(|c| &c.signals), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_running_command_terminates_it() {
    let host = hanging_host();
    let client = client(&host, "S3cret!").build().unwrap();
    let running = client.start(CommandSpec::new("hang")).await.unwrap();
    drop(running);
    for _ in 0..100 {
        if host.count(|c| &c.signals) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(host.count(|c| &c.signals), 1);
}
