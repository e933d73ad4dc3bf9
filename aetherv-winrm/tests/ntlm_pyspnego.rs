//! Interop test: our NTLM initiator/acceptor and sealing against pyspnego (the Python library
//! behind pywinrm / pypsrp), in both directions.
//!
//! Runs `$AETHERV_PYTHON` (default: the workspace's `.venv`, else `python3`) on `tests/interop/ntlm_peer.py`, speaking a
//! line-based base64 protocol over the child's stdin/stdout. Python with the `spnego` module is
//! required: without it the test FAILS (run `scripts/test`, which installs pyspnego into `.venv`
//! and sets `AETHERV_PYTHON`). Every wait is bounded; a hung peer is killed after 60 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use aetherv_winrm::Secret;
use aetherv_winrm::ntlm::{
    AcceptorIdentity, AcceptorInputs, AuthenticateInputs, NtlmAcceptor, NtlmCredentials, NtlmError,
    NtlmInitiator, NtlmSession,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Longest the peer may live (and the longest any single reply may take).
const PEER_DEADLINE: Duration = Duration::from_secs(60);

const HOW_TO_FIX: &str = "run scripts/test, which installs pyspnego into .venv and sets \
                          AETHERV_PYTHON (or set AETHERV_PYTHON to a python with `pip install pyspnego`)";

/// The workspace's `.venv` (made by `scripts/test`) when it exists, else `python3`.
fn default_python() -> String {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        venv.to_string_lossy().into_owned()
    } else {
        "python3".to_owned()
    }
}

const PASSWORD: &str = "Pässwörd€😀";

fn enc(data: &[u8]) -> String {
    if data.is_empty() {
        "-".to_owned()
    } else {
        B64.encode(data)
    }
}

fn dec(text: &str) -> Vec<u8> {
    if text == "-" {
        Vec::new()
    } else {
        B64.decode(text).expect("peer sent invalid base64")
    }
}

/// A running `ntlm_peer.py`.
struct Peer {
    stdin: Option<ChildStdin>,
    lines: Receiver<Option<String>>,
    child: Arc<Mutex<Child>>,
    stop_watchdog: Option<Sender<()>>,
    dir: PathBuf,
}

impl Peer {
    /// Starts the peer with an `NTLM_USER_FILE` holding `user_file` (DOMAIN:USER:PASSWORD lines).
    fn spawn(user_file: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aetherv-ntlm-pyspnego-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let user_path = dir.join("ntlm_users");
        std::fs::write(&user_path, user_file).unwrap();

        let python = std::env::var("AETHERV_PYTHON").unwrap_or_else(|_| default_python());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/ntlm_peer.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .env("NTLM_USER_FILE", &user_path)
            .env("NETBIOS_COMPUTER_NAME", "PYPEER")
            .env("PYTHONIOENCODING", "utf-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python:?}: {e}; {HOW_TO_FIX}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();

        let (line_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = line_tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if line_tx.send(Some(line.trim_end().to_owned())).is_err() {
                            return;
                        }
                    }
                }
            }
        });

        let child = Arc::new(Mutex::new(child));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let watched = Arc::clone(&child);
        thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(PEER_DEADLINE) {
                eprintln!("ntlm_peer.py still running after {PEER_DEADLINE:?}; killing it");
                let _ = watched.lock().unwrap().kill();
            }
        });

        let mut peer = Self {
            stdin: Some(stdin),
            lines,
            child,
            stop_watchdog: Some(stop_tx),
            dir,
        };
        let ready = peer.read_reply();
        match ready.first().map(String::as_str) {
            Some("READY") => {}
            Some("NOSPNEGO") => {
                let why = String::from_utf8_lossy(&dec(ready.get(1).map_or("-", String::as_str)))
                    .into_owned();
                panic!("{python:?} has no `spnego` module ({why}); {HOW_TO_FIX}");
            }
            _ => panic!("unexpected greeting from ntlm_peer.py: {ready:?}; {HOW_TO_FIX}"),
        }
        peer
    }

    fn read_reply(&mut self) -> Vec<String> {
        match self.lines.recv_timeout(PEER_DEADLINE) {
            Ok(Some(line)) => line.split(' ').map(str::to_owned).collect(),
            Ok(None) => panic!("ntlm_peer.py exited (see its stderr above); {HOW_TO_FIX}"),
            Err(_) => panic!("no reply from ntlm_peer.py within {PEER_DEADLINE:?}"),
        }
    }

    /// Sends one command and returns the reply's words.
    fn call(&mut self, words: &[&str]) -> Vec<String> {
        let stdin = self.stdin.as_mut().unwrap();
        let mut line = words.join(" ");
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to ntlm_peer.py failed: {e}"));
        self.read_reply()
    }

    /// Sends a command that must succeed with reply `tag`; returns the reply's arguments.
    fn expect(&mut self, words: &[&str], tag: &str) -> Vec<String> {
        let reply = self.call(words);
        if reply.first().map(String::as_str) == Some("ERR") {
            let why = String::from_utf8_lossy(&dec(&reply[1])).into_owned();
            panic!("pyspnego failed on {}: {why}", words[0]);
        }
        assert_eq!(reply[0], tag, "unexpected reply to {}: {reply:?}", words[0]);
        reply[1..].to_vec()
    }

    /// Sends a command that must fail; returns pyspnego's error message.
    fn expect_err(&mut self, words: &[&str]) -> String {
        let reply = self.call(words);
        assert_eq!(reply[0], "ERR", "pyspnego accepted {}: {reply:?}", words[0]);
        String::from_utf8_lossy(&dec(&reply[1])).into_owned()
    }

    /// STEP: returns (output token, complete, client principal).
    fn step(&mut self, token: &[u8]) -> (Vec<u8>, bool, String) {
        let r = self.expect(&["STEP", &enc(token)], "TOKEN");
        (
            dec(&r[0]),
            r[1] == "1",
            String::from_utf8(dec(&r[2])).unwrap(),
        )
    }

    /// pyspnego `wrap_winrm`: returns (header, data).
    fn wrap(&mut self, plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let r = self.expect(&["WRAP", &enc(plaintext)], "WRAPPED");
        assert_eq!(r[2], "0", "NTLM wrap_winrm has no padding");
        (dec(&r[0]), dec(&r[1]))
    }

    /// pyspnego `unwrap_winrm`: returns the plaintext.
    fn unwrap_winrm(&mut self, header: &[u8], data: &[u8]) -> Vec<u8> {
        let r = self.expect(&["UNWRAP", &enc(header), &enc(data)], "PLAIN");
        dec(&r[0])
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"QUIT\n");
        }
        // Give it a moment to exit on its own, then make sure it is gone.
        let _ = self.lines.recv_timeout(Duration::from_secs(5));
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(stop) = self.stop_watchdog.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn inputs() -> AuthenticateInputs {
    AuthenticateInputs::random(&mut rand::rngs::OsRng, SystemTime::now())
}

/// Payloads exchanged after authentication: ASCII, non-ASCII UTF-8, empty, a WinRM-sized SOAP
/// body and 1 MiB of binary data.
fn payloads() -> Vec<Vec<u8>> {
    let mut big = vec![0u8; 1 << 20];
    let mut x: u32 = 0x1234_5678;
    for b in &mut big {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    vec![
        b"hello from aetherv".to_vec(),
        "Grüße, 世界 — ünïcödé 🚀 ‘quotes’".as_bytes().to_vec(),
        Vec::new(),
        format!(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\">{}</s:Envelope>",
            "<x>data</x>".repeat(10_000)
        )
        .into_bytes(),
        big,
        b"last".to_vec(),
    ]
}

/// Seals each payload for the peer and each reply from the peer, alternating directions.
fn exchange_messages(peer: &mut Peer, session: &mut NtlmSession) {
    for (i, payload) in payloads().iter().enumerate() {
        let (signature, ciphertext) = session.seal(payload);
        if !payload.is_empty() {
            assert_ne!(&ciphertext, payload);
        }
        let seen = peer.unwrap_winrm(&signature, &ciphertext);
        assert_eq!(&seen, payload, "pyspnego unwrapped message {i} differently");

        let mut reply = payload.clone();
        reply.extend_from_slice(format!(" / reply {i} ✓").as_bytes());
        let (header, data) = peer.wrap(&reply);
        assert_eq!(header.len(), 16);
        let plain = session
            .unseal(&header, &data)
            .unwrap_or_else(|e| panic!("unsealing pyspnego's reply {i}: {e}"));
        assert_eq!(plain, reply);
    }
    // Several messages in a row in one direction, then the other.
    let burst: Vec<_> = (0..5u8).map(|i| session.seal(&[i; 100])).collect();
    for (i, (sig, ct)) in burst.iter().enumerate() {
        assert_eq!(peer.unwrap_winrm(sig, ct), vec![i as u8; 100]);
    }
    let replies: Vec<_> = (0..5u8).map(|i| peer.wrap(&[i; 50])).collect();
    for (i, (h, d)) in replies.iter().enumerate() {
        assert_eq!(session.unseal(h, d).unwrap(), vec![i as u8; 50]);
    }
}

/// Runs our initiator against pyspnego's acceptor; returns the session, or pyspnego's error.
fn rust_initiator(peer: &mut Peer, user: &str, password: &str) -> Result<NtlmSession, String> {
    peer.expect(&["SERVER"], "OK");
    let mut initiator = NtlmInitiator::new(
        NtlmCredentials::parse(user, Secret::new(password)),
        Some("AETHERV".to_owned()),
    );
    let (challenge, complete, _) = peer.step(&initiator.negotiate_message());
    assert!(!complete);
    let (authenticate, session) = initiator
        .authenticate_message(&challenge, &inputs())
        .unwrap();
    let reply = peer.call(&["STEP", &enc(&authenticate)]);
    match reply[0].as_str() {
        "TOKEN" => {
            assert_eq!(reply[2], "1", "pyspnego did not complete: {reply:?}");
            let principal = String::from_utf8(dec(&reply[3])).unwrap();
            assert_eq!(principal.to_lowercase(), user.to_lowercase());
            Ok(session)
        }
        "ERR" => Err(String::from_utf8_lossy(&dec(&reply[1])).into_owned()),
        other => panic!("unexpected reply {other}"),
    }
}

#[test]
fn ntlm_rust_initiator_with_pyspnego_acceptor_and_sealing() {
    let mut peer = Peer::spawn(&format!("AETHER:alice:{PASSWORD}\n"));
    let mut session = rust_initiator(&mut peer, "AETHER\\alice", PASSWORD)
        .unwrap_or_else(|e| panic!("pyspnego refused our AUTHENTICATE: {e}"));
    exchange_messages(&mut peer, &mut session);
}

#[test]
fn ntlm_rust_initiator_upn_user_with_pyspnego_acceptor() {
    let mut peer = Peer::spawn("other:bob:x\n:alice@aether.test:upn-secret\n");
    let mut session = rust_initiator(&mut peer, "alice@aether.test", "upn-secret")
        .unwrap_or_else(|e| panic!("pyspnego refused our AUTHENTICATE: {e}"));
    let (sig, ct) = session.seal(b"upn");
    assert_eq!(peer.unwrap_winrm(&sig, &ct), b"upn");
}

#[test]
fn ntlm_rust_initiator_wrong_password_refused_by_pyspnego() {
    let mut peer = Peer::spawn(&format!("AETHER:alice:{PASSWORD}\n"));
    let err = rust_initiator(&mut peer, "AETHER\\alice", "not the password")
        .expect_err("pyspnego accepted a wrong password");
    assert!(err.contains("Invalid"), "unexpected pyspnego error: {err}");
}

#[test]
fn ntlm_rust_initiator_tampered_mic_refused_by_pyspnego() {
    // Proves pyspnego really checks the MIC we place at offset 72.
    let mut peer = Peer::spawn(&format!("AETHER:alice:{PASSWORD}\n"));
    peer.expect(&["SERVER"], "OK");
    let mut initiator = NtlmInitiator::new(
        NtlmCredentials::parse("AETHER\\alice", Secret::new(PASSWORD)),
        None,
    );
    let (challenge, _, _) = peer.step(&initiator.negotiate_message());
    let (mut authenticate, _) = initiator
        .authenticate_message(&challenge, &inputs())
        .unwrap();
    authenticate[75] ^= 0x10;
    let err = peer.expect_err(&["STEP", &enc(&authenticate)]);
    assert!(err.contains("MIC"), "unexpected pyspnego error: {err}");
}

/// Runs pyspnego's initiator against our acceptor.
fn python_initiator(
    peer: &mut Peer,
    user: &str,
    password: &str,
) -> Result<(aetherv_winrm::ntlm::AuthenticatedUser, NtlmSession), NtlmError> {
    peer.expect(
        &["CLIENT", &enc(user.as_bytes()), &enc(password.as_bytes())],
        "OK",
    );
    let (negotiate, complete, _) = peer.step(&[]);
    assert!(!complete);
    let mut acceptor = NtlmAcceptor::new(
        AcceptorIdentity {
            netbios_domain: "AETHER".into(),
            netbios_computer: "HV01".into(),
            dns_domain: "aether.test".into(),
            dns_computer: "hv01.aether.test".into(),
        },
        AcceptorInputs::random(&mut rand::rngs::OsRng, SystemTime::now()),
    );
    let challenge = acceptor.challenge_message(&negotiate).unwrap();
    let (authenticate, complete, _) = peer.step(&challenge);
    assert!(
        complete,
        "pyspnego initiator not complete after AUTHENTICATE"
    );
    acceptor.accept(&authenticate, &|domain, username| {
        (domain.eq_ignore_ascii_case("AETHER") && username.eq_ignore_ascii_case("alice"))
            .then(|| Secret::new(PASSWORD))
    })
}

#[test]
fn ntlm_pyspnego_initiator_with_rust_acceptor_and_sealing() {
    let mut peer = Peer::spawn("");
    let (user, mut session) = python_initiator(&mut peer, "AETHER\\alice", PASSWORD)
        .unwrap_or_else(|e| panic!("our acceptor refused pyspnego: {e}"));
    assert_eq!(user.domain, "AETHER");
    assert_eq!(user.username, "alice");
    // Here the Rust side is the server: exchange_messages seals server->client first.
    exchange_messages(&mut peer, &mut session);
}

#[test]
fn ntlm_pyspnego_initiator_wrong_password_refused_by_rust_acceptor() {
    let mut peer = Peer::spawn("");
    let err = python_initiator(&mut peer, "AETHER\\alice", "wrong")
        .expect_err("our acceptor accepted a wrong password");
    assert_eq!(err, NtlmError::Refused);
}

#[test]
fn ntlm_pyspnego_peer_reports_errors() {
    // Sanity check of the harness itself: garbage for pyspnego's acceptor is an error reply.
    let mut peer = Peer::spawn("AETHER:alice:x\n");
    peer.expect(&["SERVER"], "OK");
    let err = peer.expect_err(&["STEP", &enc(b"not an NTLM token")]);
    assert!(!err.is_empty());
}
