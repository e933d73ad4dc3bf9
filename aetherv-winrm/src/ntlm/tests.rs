//! Handshake and session tests: initiator against acceptor in-process, tampering, sequence
//! numbers, and property tests for round trips and panic-freedom on arbitrary bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;
use crate::Secret;

fn identity() -> AcceptorIdentity {
    AcceptorIdentity {
        netbios_domain: "AETHER".into(),
        netbios_computer: "HV01".into(),
        dns_domain: "aether.test".into(),
        dns_computer: "hv01.aether.test".into(),
    }
}

fn acceptor_inputs() -> AcceptorInputs {
    AcceptorInputs {
        server_challenge: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
        timestamp: 133_000_000_000_000_000,
    }
}

fn client_inputs() -> AuthenticateInputs {
    AuthenticateInputs {
        client_challenge: [0xaa; 8],
        exported_session_key: [0x55; 16],
        timestamp: 1,
    }
}

fn lookup(domain: &str, user: &str) -> Option<Secret> {
    (domain.eq_ignore_ascii_case("AETHER") && user.eq_ignore_ascii_case("alice"))
        .then(|| Secret::new("Pässwörd€😀"))
}

struct Handshake {
    negotiate: Vec<u8>,
    challenge: Vec<u8>,
    authenticate: Vec<u8>,
    client: NtlmSession,
}

fn handshake(user: &str, password: &str) -> (Handshake, NtlmAcceptor) {
    let mut initiator = NtlmInitiator::new(
        NtlmCredentials::parse(user, Secret::new(password)),
        Some("LINUXBOX".into()),
    );
    let negotiate = initiator.negotiate_message();
    let mut acceptor = NtlmAcceptor::new(identity(), acceptor_inputs());
    let challenge = acceptor.challenge_message(&negotiate).unwrap();
    let (authenticate, client) = initiator
        .authenticate_message(&challenge, &client_inputs())
        .unwrap();
    (
        Handshake {
            negotiate,
            challenge,
            authenticate,
            client,
        },
        acceptor,
    )
}

fn established() -> (NtlmSession, NtlmSession) {
    let (hs, acceptor) = handshake("AETHER\\alice", "Pässwörd€😀");
    let (user, server) = acceptor.accept(&hs.authenticate, &lookup).unwrap();
    assert_eq!(
        user,
        AuthenticatedUser {
            domain: "AETHER".into(),
            username: "alice".into()
        }
    );
    (hs.client, server)
}

#[test]
fn ntlm_credentials_parse_forms() {
    let c = NtlmCredentials::parse("DOM\\user", Secret::new("x"));
    assert_eq!((c.domain.as_str(), c.username.as_str()), ("DOM", "user"));
    let c = NtlmCredentials::parse("user@realm.example", Secret::new("x"));
    assert_eq!(
        (c.domain.as_str(), c.username.as_str()),
        ("", "user@realm.example")
    );
    let c = NtlmCredentials::parse("user", Secret::new("x"));
    assert_eq!((c.domain.as_str(), c.username.as_str()), ("", "user"));
    let c = NtlmCredentials::parse("u", Secret::new("hunter2"));
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn ntlm_inputs_debug_hides_session_key() {
    let inputs = AuthenticateInputs::random(&mut rand::rngs::OsRng, std::time::SystemTime::now());
    let text = format!("{inputs:?}");
    assert!(text.contains("***"));
    let acc = AcceptorInputs::random(&mut rand::rngs::OsRng, std::time::SystemTime::now());
    assert!(acc.timestamp > 116_444_736_000_000_000);
}

#[test]
fn ntlm_handshake_succeeds_and_authenticate_layout() {
    let (hs, acceptor) = handshake("AETHER\\alice", "Pässwörd€😀");
    let auth = &hs.authenticate;
    assert_eq!(&auth[..12], b"NTLMSSP\0\x03\0\0\0");
    // LMv2 is 24 zero bytes when a MIC is sent.
    let lm = messages::Authenticate::parse(auth).unwrap();
    assert_eq!(lm.lm_response, vec![0; 24]);
    assert!(lm.has_mic_field);
    assert_ne!(lm.mic, [0; 16]);
    assert_eq!(lm.encrypted_session_key.len(), 16);
    assert_eq!(lm.workstation, "LINUXBOX");
    // The blob uses the server's timestamp, not inputs.timestamp.
    let blob = &lm.nt_response[16..];
    assert_eq!(&blob[8..16], &acceptor_inputs().timestamp.to_le_bytes());
    assert_eq!(&blob[16..24], &[0xaa; 8]);
    // The MIC covers NEGOTIATE || CHALLENGE || AUTHENTICATE-with-zero-MIC.
    let mut zeroed = auth.clone();
    zeroed[72..88].fill(0);
    let mic = crypto::mic(&[0x55; 16], &hs.negotiate, &hs.challenge, &zeroed);
    assert_eq!(&auth[72..88], &mic);
    let (_, _server) = acceptor.accept(auth, &lookup).unwrap();
}

/// A handshake whose client sends `sent` as channel bindings, accepted by an acceptor that
/// expects `expected` (`required` or not).
fn bound_handshake(
    sent: Option<[u8; 16]>,
    expected: Option<[u8; 16]>,
    required: bool,
) -> Result<(AuthenticatedUser, NtlmSession), NtlmError> {
    let mut initiator = NtlmInitiator::new(
        NtlmCredentials::parse("AETHER\\alice", Secret::new("Pässwörd€😀")),
        None,
    )
    .with_channel_bindings(sent);
    let negotiate = initiator.negotiate_message();
    let mut acceptor =
        NtlmAcceptor::new(identity(), acceptor_inputs()).with_channel_bindings(expected, required);
    let challenge = acceptor.challenge_message(&negotiate).unwrap();
    let (authenticate, _) = initiator
        .authenticate_message(&challenge, &client_inputs())
        .unwrap();
    acceptor.accept(&authenticate, &lookup)
}

#[test]
fn ntlm_channel_bindings_are_checked() {
    let tls = crate::channel_bindings::ChannelBindings::tls_server_end_point(b"cert").ntlm_hash();
    let other = crate::channel_bindings::ChannelBindings::tls_server_end_point(b"evil").ntlm_hash();
    // Matching bindings pass, strict or not.
    assert!(bound_handshake(Some(tls), Some(tls), true).is_ok());
    assert!(bound_handshake(Some(tls), Some(tls), false).is_ok());
    // Bindings of another channel (a relay, an intercepting proxy) are refused in both modes.
    for required in [false, true] {
        assert_eq!(
            bound_handshake(Some(other), Some(tls), required).unwrap_err(),
            NtlmError::ChannelBindingsMismatch
        );
    }
    // No bindings (absent or all zero): accepted unless required.
    assert!(bound_handshake(None, Some(tls), false).is_ok());
    assert_eq!(
        bound_handshake(None, Some(tls), true).unwrap_err(),
        NtlmError::ChannelBindingsMissing
    );
    assert_eq!(
        bound_handshake(Some([0; 16]), Some(tls), true).unwrap_err(),
        NtlmError::ChannelBindingsMissing
    );
    // Over plain HTTP there is no channel to bind to: nothing is checked.
    assert!(bound_handshake(Some(other), None, true).is_ok());
}

#[test]
fn ntlm_wrong_password_is_refused() {
    let (hs, acceptor) = handshake("AETHER\\alice", "wrong");
    assert_eq!(
        acceptor.accept(&hs.authenticate, &lookup).unwrap_err(),
        NtlmError::Refused
    );
}

#[test]
fn ntlm_unknown_user_is_refused() {
    let (hs, acceptor) = handshake("AETHER\\mallory", "Pässwörd€😀");
    let err = acceptor.accept(&hs.authenticate, &lookup).unwrap_err();
    assert!(matches!(err, NtlmError::UnknownUser { .. }), "{err:?}");
    assert!(!err.to_string().contains("Pässwörd"));
}

#[test]
fn ntlm_tampered_mic_is_refused() {
    let (mut hs, acceptor) = handshake("AETHER\\alice", "Pässwörd€😀");
    hs.authenticate[80] ^= 1;
    assert_eq!(
        acceptor.accept(&hs.authenticate, &lookup).unwrap_err(),
        NtlmError::BadMic
    );
}

#[test]
fn ntlm_tampered_flags_are_refused_by_mic() {
    let (mut hs, acceptor) = handshake("AETHER\\alice", "Pässwörd€😀");
    // Drop NEGOTIATE_SEAL from the AUTHENTICATE flags: only the MIC covers them.
    hs.authenticate[60] &= !0x20;
    assert_eq!(
        acceptor.accept(&hs.authenticate, &lookup).unwrap_err(),
        NtlmError::BadMic
    );
}

#[test]
fn ntlm_tampered_blob_is_refused() {
    let (mut hs, acceptor) = handshake("AETHER\\alice", "Pässwörd€😀");
    let last = hs.authenticate.len() - 20;
    hs.authenticate[last] ^= 0x40;
    assert!(acceptor.accept(&hs.authenticate, &lookup).is_err());
}

#[test]
fn ntlm_accept_before_challenge_is_out_of_order() {
    let acceptor = NtlmAcceptor::new(identity(), acceptor_inputs());
    assert!(matches!(
        acceptor.accept(b"NTLMSSP\0", &lookup),
        Err(NtlmError::OutOfOrder(_))
    ));
}

#[test]
fn ntlm_acceptor_requires_extended_session_security() {
    let mut neg =
        NtlmInitiator::new(NtlmCredentials::parse("u", Secret::new("p")), None).negotiate_message();
    let flags = u32::from_le_bytes(neg[12..16].try_into().unwrap()) & !0x0008_0000;
    neg[12..16].copy_from_slice(&flags.to_le_bytes());
    let mut acceptor = NtlmAcceptor::new(identity(), acceptor_inputs());
    assert_eq!(
        acceptor.challenge_message(&neg).unwrap_err(),
        NtlmError::Unsupported {
            what: "extended session security"
        }
    );
}

#[test]
fn ntlm_initiator_rejects_wrong_message_type() {
    let mut initiator = NtlmInitiator::new(NtlmCredentials::parse("u", Secret::new("p")), None);
    let neg = initiator.negotiate_message();
    let err = initiator
        .authenticate_message(&neg, &client_inputs())
        .unwrap_err();
    assert_eq!(
        err,
        NtlmError::UnexpectedMessageType {
            expected: 2,
            found: 1
        }
    );
}

#[test]
fn ntlm_initiator_requires_target_info() {
    let challenge =
        messages::challenge_to_bytes(Flags::from_bits_retain(0xe28a_8235), &[1; 8], "S", &[])
            .unwrap();
    // challenge_to_bytes always appends MsvAvEOL; strip the target info field to zero length.
    let mut challenge = challenge;
    challenge[40..42].copy_from_slice(&[0, 0]);
    let initiator = NtlmInitiator::new(NtlmCredentials::parse("u", Secret::new("p")), None);
    assert_eq!(
        initiator
            .authenticate_message(&challenge, &client_inputs())
            .unwrap_err(),
        NtlmError::MissingTargetInfo
    );
}

#[test]
fn ntlm_upn_user_authenticates_with_empty_domain() {
    let (hs, acceptor) = handshake("alice@aether.test", "pw");
    let seen = std::cell::RefCell::new(None);
    let lookup = |d: &str, u: &str| {
        *seen.borrow_mut() = Some((d.to_owned(), u.to_owned()));
        Some(Secret::new("pw"))
    };
    let (user, _) = acceptor.accept(&hs.authenticate, &lookup).unwrap();
    assert_eq!(user.domain, "");
    assert_eq!(user.username, "alice@aether.test");
    assert_eq!(
        seen.into_inner(),
        Some((String::new(), "alice@aether.test".to_owned()))
    );
}

#[test]
fn ntlm_seal_both_ways_many_messages() {
    let (mut client, mut server) = established();
    for i in 0..50u32 {
        let msg = format!("request {i} ✓").repeat(i as usize + 1);
        let (sig, ct) = client.seal(msg.as_bytes());
        assert_eq!(&sig[12..], &i.to_le_bytes());
        assert_ne!(ct, msg.as_bytes());
        assert_eq!(server.unseal(&sig, &ct).unwrap(), msg.as_bytes());

        let reply = vec![i as u8; i as usize * 37];
        let mut buf = reply.clone();
        let sig = server.seal_in_place(&mut buf);
        client.unseal_in_place(&sig, &mut buf).unwrap();
        assert_eq!(buf, reply);
    }
    assert_eq!(client.next_outgoing_sequence(), 50);
    assert_eq!(client.next_incoming_sequence(), 50);
    assert_eq!(server.next_outgoing_sequence(), 50);
    assert_eq!(server.next_incoming_sequence(), 50);
}

#[test]
fn ntlm_directions_are_independent() {
    let (mut client, mut server) = established();
    // Three client messages before any reply: each direction counts on its own.
    let sealed: Vec<_> = (0..3).map(|i| client.seal(&[i; 10])).collect();
    let (sig, ct) = server.seal(b"reply");
    assert_eq!(&sig[12..], &0u32.to_le_bytes());
    assert_eq!(client.unseal(&sig, &ct).unwrap(), b"reply");
    for (i, (sig, ct)) in sealed.iter().enumerate() {
        assert_eq!(server.unseal(sig, ct).unwrap(), vec![i as u8; 10]);
    }
}

#[test]
fn ntlm_client_cannot_unseal_its_own_messages() {
    let (mut client, _server) = established();
    let (sig, ct) = client.seal(b"hello");
    assert!(client.unseal(&sig, &ct).is_err());
}

#[test]
fn ntlm_tampered_ciphertext_fails() {
    let (mut client, mut server) = established();
    let (sig, mut ct) = client.seal(b"some payload");
    ct[3] ^= 0x01;
    assert_eq!(
        server.unseal(&sig, &ct).unwrap_err(),
        NtlmError::BadSignature { sequence: 0 }
    );
}

#[test]
fn ntlm_tampered_checksum_fails() {
    let (mut client, mut server) = established();
    let (mut sig, ct) = client.seal(b"some payload");
    sig[5] ^= 0x80;
    assert_eq!(
        server.unseal(&sig, &ct).unwrap_err(),
        NtlmError::BadSignature { sequence: 0 }
    );
}

#[test]
fn ntlm_wrong_sequence_fails() {
    let (mut client, mut server) = established();
    let first = client.seal(b"first");
    let second = client.seal(b"second");
    // Skipping a message: the sequence number check fires before any state changes.
    assert_eq!(
        server.unseal(&second.0, &second.1).unwrap_err(),
        NtlmError::SequenceMismatch {
            expected: 0,
            found: 1
        }
    );
    assert_eq!(server.unseal(&first.0, &first.1).unwrap(), b"first");
    assert_eq!(server.unseal(&second.0, &second.1).unwrap(), b"second");
    // Replaying a message fails too.
    assert!(matches!(
        server.unseal(&first.0, &first.1),
        Err(NtlmError::SequenceMismatch {
            expected: 2,
            found: 0
        })
    ));
    // A later message relabelled with the expected sequence number fails the checksum.
    let _skipped = client.seal(b"third");
    let (mut sig, ct) = client.seal(b"fourth");
    sig[12..].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(
        server.unseal(&sig, &ct).unwrap_err(),
        NtlmError::BadSignature { sequence: 2 }
    );
}

#[test]
fn ntlm_empty_payload_round_trip() {
    let (mut client, mut server) = established();
    let (sig, ct) = client.seal(b"");
    assert!(ct.is_empty());
    assert_eq!(server.unseal(&sig, &ct).unwrap(), b"");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ntlm_prop_seal_unseal_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2048), 1..8)) {
        let (mut client, mut server) = established();
        for p in &payloads {
            let (sig, ct) = client.seal(p);
            prop_assert_eq!(&server.unseal(&sig, &ct).unwrap(), p);
            let (sig, ct) = server.seal(p);
            prop_assert_eq!(&client.unseal(&sig, &ct).unwrap(), p);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ntlm_prop_authenticate_message_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let initiator = NtlmInitiator::new(NtlmCredentials::parse("D\\u", Secret::new("p")), None);
        let _ = initiator.authenticate_message(&bytes, &client_inputs());
    }

    #[test]
    fn ntlm_prop_authenticate_message_never_panics_on_challenge_like(
        flags in any::<u32>(),
        fields in proptest::array::uniform4(any::<u32>()),
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        // Valid header, random flags, random field lengths/offsets, random payload.
        let mut bytes = b"NTLMSSP\0\x02\0\0\0".to_vec();
        bytes.extend_from_slice(&fields[0].to_le_bytes());
        bytes.extend_from_slice(&fields[1].to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
        bytes.extend_from_slice(&[1; 16]);
        bytes.extend_from_slice(&fields[2].to_le_bytes());
        bytes.extend_from_slice(&fields[3].to_le_bytes());
        bytes.extend_from_slice(&tail);
        let initiator = NtlmInitiator::new(NtlmCredentials::parse("D\\u", Secret::new("p")), None);
        let _ = initiator.authenticate_message(&bytes, &client_inputs());
    }

    #[test]
    fn ntlm_prop_challenge_message_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut acceptor = NtlmAcceptor::new(identity(), acceptor_inputs());
        let _ = acceptor.challenge_message(&bytes);
        let mut with_header = b"NTLMSSP\0\x01\0\0\0".to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = acceptor.challenge_message(&with_header);
    }

    #[test]
    fn ntlm_prop_accept_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut acceptor = NtlmAcceptor::new(identity(), acceptor_inputs());
        let neg = NtlmInitiator::new(NtlmCredentials::parse("u", Secret::new("p")), None).negotiate_message();
        acceptor.challenge_message(&neg).unwrap();
        let _ = acceptor.accept(&bytes, &lookup);
    }

    #[test]
    fn ntlm_prop_accept_never_panics_on_mutated_authenticate(
        index in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let (hs, acceptor) = handshake("AETHER\\alice", "Pässwörd€😀");
        let mut auth = hs.authenticate.clone();
        let i = index.index(auth.len());
        auth[i] ^= xor;
        let keep = cut.index(auth.len() + 1);
        let result = acceptor.accept(&auth, &lookup);
        // Any single-byte change is caught (MIC, proof, or parsing) — except in the unused
        // version field, which no check covers but the MIC.
        prop_assert!(result.is_err());
        let (hs, acceptor) = handshake("AETHER\\alice", "Pässwörd€😀");
        let truncated = &hs.authenticate[..keep.min(hs.authenticate.len())];
        let result = acceptor.accept(truncated, &lookup);
        prop_assert!(result.is_err() || truncated.len() == hs.authenticate.len());
    }
}
