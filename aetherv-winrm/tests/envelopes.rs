//! Fixture-driven and property tests of the WS-Man envelope layer, the CLIXML decoder and the
//! multipart/encrypted framing.
//!
//! Request fixtures (`tests/fixtures/requests/*.xml`) are the exact bytes the builder must
//! produce; run with `UPDATE_FIXTURES=1` to rewrite them (and the CLIXML expectations) after an
//! intended change, then review the diff. Response fixtures are hand-written after real Windows
//! Server responses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use aetherv_winrm::envelope::{
    self, CommandState, EnvelopeError, ReceiveOutput, Request, RequestHeader, Response,
    ResponseKind, ShellOptions, Signal, Stream, StreamChunk, WsmanFault,
};
use aetherv_winrm::{clixml, framing};
use proptest::prelude::*;
use uuid::Uuid;

const COMMAND_ID: &str = "4A3F2E1D-0C9B-4A87-9E65-D4C3B2A19F80";
const SHELL_ID: &str = "9D4F3C0E-5B2A-4E11-8C7D-2A6B1F0E3D45";
const REQUEST_ID: Uuid = Uuid::from_u128(0x11111111_2222_4333_8444_555555555555);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_fixture(relative: &str) -> Vec<u8> {
    let path = fixtures().join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with the fixture file, or rewrites the file when `UPDATE_FIXTURES` is set.
fn check_fixture(relative: &str, actual: &str) {
    let path = fixtures().join(relative);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{actual}\n")).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_FIXTURES=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        expected.strip_suffix('\n').unwrap_or(&expected),
        actual,
        "{relative} differs (run with UPDATE_FIXTURES=1 to accept the new output)"
    );
}

fn header(timeout_secs: u64) -> RequestHeader {
    RequestHeader {
        operation_timeout: Duration::from_secs(timeout_secs),
        ..RequestHeader::new("http://hv01.example.test:5985/wsman", REQUEST_ID)
    }
}

/// Every request kind from fixed inputs: (fixture name, header, request).
fn request_cases() -> Vec<(&'static str, RequestHeader, Request)> {
    let script = "$ErrorActionPreference = 'Stop'; Get-VM -Name $args[0]";
    let encoded: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let encoded = base64_encode(&encoded);
    vec![
        (
            "create_default",
            header(60),
            Request::Create(ShellOptions {
                no_profile: true,
                ..ShellOptions::default()
            }),
        ),
        (
            "create_full",
            RequestHeader {
                max_envelope_size: 512_000,
                locale: "de-DE".to_owned(),
                operation_timeout: Duration::from_millis(20_500),
                ..header(0)
            },
            Request::Create(ShellOptions {
                codepage: 437,
                no_profile: false,
                working_directory: Some(r"C:\ProgramData\Aetherv".to_owned()),
                environment: vec![
                    ("AETHERV_JOB".to_owned(), "42".to_owned()),
                    (
                        "QUOTED \"&<>'".to_owned(),
                        "x & y <z> \"Grüße\"\r\nline2".to_owned(),
                    ),
                ],
                idle_timeout: Some(Duration::from_secs(1800)),
                ..ShellOptions::default()
            }),
        ),
        (
            "delete",
            header(60),
            Request::Delete {
                shell_id: SHELL_ID.to_owned(),
            },
        ),
        (
            "command_powershell",
            header(60),
            Request::Command {
                shell_id: SHELL_ID.to_owned(),
                command: "powershell.exe".to_owned(),
                arguments: vec![
                    "-NoProfile".to_owned(),
                    "-NonInteractive".to_owned(),
                    "-EncodedCommand".to_owned(),
                    encoded,
                ],
                skip_cmd_shell: true,
            },
        ),
        (
            "command_cmd",
            header(60),
            Request::Command {
                shell_id: SHELL_ID.to_owned(),
                command: "cmd.exe".to_owned(),
                arguments: vec![
                    "/c".to_owned(),
                    "echo".to_owned(),
                    "héllo & <wörld> ]]>".to_owned(),
                ],
                skip_cmd_shell: false,
            },
        ),
        (
            "send_end",
            header(60),
            Request::Send {
                shell_id: SHELL_ID.to_owned(),
                command_id: COMMAND_ID.to_owned(),
                stream: "stdin".to_owned(),
                data: "{\"vm_name\":\"web01\",\"note\":\"Grüße\"}\r\n"
                    .as_bytes()
                    .to_vec(),
                end: true,
            },
        ),
        (
            "send_partial",
            header(60),
            Request::Send {
                shell_id: SHELL_ID.to_owned(),
                command_id: COMMAND_ID.to_owned(),
                stream: "stdin".to_owned(),
                data: (0u8..=255).collect(),
                end: false,
            },
        ),
        (
            "receive",
            header(20),
            Request::Receive {
                shell_id: SHELL_ID.to_owned(),
                command_id: COMMAND_ID.to_owned(),
                stream: "stdout stderr".to_owned(),
            },
        ),
        (
            "signal_terminate",
            header(60),
            Request::Signal {
                shell_id: SHELL_ID.to_owned(),
                command_id: COMMAND_ID.to_owned(),
                signal: Signal::Terminate,
            },
        ),
        (
            "signal_ctrl_c",
            header(60),
            Request::Signal {
                shell_id: SHELL_ID.to_owned(),
                command_id: COMMAND_ID.to_owned(),
                signal: Signal::CtrlC,
            },
        ),
    ]
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn requests_match_fixtures_and_parse_back() {
    for (name, header, request) in request_cases() {
        let xml = envelope::build_request(&header, &request);
        check_fixture(&format!("requests/{name}.xml"), &xml);

        let mut buf = b"prefix".to_vec();
        envelope::write_request(&mut buf, &header, &request);
        assert_eq!(
            &buf[6..],
            xml.as_bytes(),
            "{name}: write_request differs from build_request"
        );

        let (parsed_header, parsed) =
            envelope::parse_request(xml.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed_header, header, "{name}");
        assert_eq!(parsed, request, "{name}");
        assert_eq!(
            ResponseKind::from(&request).request_action(),
            request.action()
        );
    }
}

#[test]
fn request_fixture_headers_are_windows_shaped() {
    let xml = String::from_utf8(read_fixture("requests/receive.xml")).unwrap();
    for needle in [
        "<a:MessageID>uuid:11111111-2222-4333-8444-555555555555</a:MessageID>",
        "<w:OperationTimeout>PT20S</w:OperationTimeout>",
        "<w:MaxEnvelopeSize s:mustUnderstand=\"true\">153600</w:MaxEnvelopeSize>",
        "<w:Locale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/>",
        "<p:DataLocale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/>",
        "<w:Selector Name=\"ShellId\">9D4F3C0E-5B2A-4E11-8C7D-2A6B1F0E3D45</w:Selector>",
        "<rsp:DesiredStream CommandId=\"4A3F2E1D-0C9B-4A87-9E65-D4C3B2A19F80\">stdout stderr</rsp:DesiredStream>",
    ] {
        assert!(xml.contains(needle), "missing {needle}");
    }
    let command = String::from_utf8(read_fixture("requests/command_powershell.xml")).unwrap();
    assert!(command.contains("<w:Option Name=\"WINRS_CONSOLEMODE_STDIN\">TRUE</w:Option>"));
    assert!(command.contains("<w:Option Name=\"WINRS_SKIP_CMD_SHELL\">TRUE</w:Option>"));
    let create = String::from_utf8(read_fixture("requests/create_full.xml")).unwrap();
    assert!(create.contains("<w:Option Name=\"WINRS_CODEPAGE\">437</w:Option>"));
    assert!(create.contains("<rsp:IdleTimeOut>PT1800S</rsp:IdleTimeOut>"));
    assert!(create.contains("<w:OperationTimeout>PT20.500S</w:OperationTimeout>"));
    // A carriage return survives XML end-of-line normalisation only as a reference.
    assert!(create.contains("&#xD;\nline2"));
}

/// Requests as other clients write them (pywinrm's `env:` prefix, whitespace, attribute order).
#[test]
fn parses_requests_from_other_clients() {
    let xml = br#"<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"
    xmlns:b="http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"
    xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
    xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
    xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">
  <env:Header>
    <a:To>http://hv01.example.test:5985/wsman</a:To>
    <a:ReplyTo><a:Address mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>
    <w:MaxEnvelopeSize mustUnderstand="true">153600</w:MaxEnvelopeSize>
    <a:MessageID>uuid:0f5c1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b</a:MessageID>
    <w:Locale mustUnderstand="false" xml:lang="en-US"/>
    <p:DataLocale mustUnderstand="false" xml:lang="en-US"/>
    <p:SessionId mustUnderstand="false">uuid:A635D444-7E75-4E46-9A68-2FFF53AF45CA</p:SessionId>
    <w:OperationTimeout>PT20.000S</w:OperationTimeout>
    <w:ResourceURI mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI>
    <a:Action mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command</a:Action>
    <w:SelectorSet><w:Selector Name="ShellId">9D4F3C0E-5B2A-4E11-8C7D-2A6B1F0E3D45</w:Selector></w:SelectorSet>
    <w:OptionSet><w:Option Name="WINRS_CONSOLEMODE_STDIN">TRUE</w:Option><w:Option Name="WINRS_SKIP_CMD_SHELL">False</w:Option></w:OptionSet>
  </env:Header>
  <env:Body>
    <rsp:CommandLine><rsp:Command>ipconfig</rsp:Command><rsp:Arguments>/all</rsp:Arguments></rsp:CommandLine>
  </env:Body>
</env:Envelope>"#;
    let (header, request) = envelope::parse_request(xml).unwrap();
    assert_eq!(
        header.message_id,
        Uuid::from_u128(0x0f5c1a2b_3c4d_4e5f_8a6b_7c8d9e0f1a2b)
    );
    assert_eq!(header.operation_timeout, Duration::from_secs(20));
    assert_eq!(header.locale, "en-US");
    assert_eq!(
        request,
        Request::Command {
            shell_id: SHELL_ID.to_owned(),
            command: "ipconfig".to_owned(),
            arguments: vec!["/all".to_owned()],
            skip_cmd_shell: false,
        }
    );

    // A Windows-client style Create without any options: defaults apply.
    let create = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header><a:To>http://h/wsman</a:To><a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Create</a:Action><a:MessageID>uuid:0f5c1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b</a:MessageID><w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI></s:Header><s:Body><Shell xmlns="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"/></s:Body></s:Envelope>"#;
    let (header, request) = envelope::parse_request(create).unwrap();
    assert_eq!(header.max_envelope_size, 153_600);
    assert_eq!(header.operation_timeout, Duration::from_secs(60));
    assert_eq!(request, Request::Create(ShellOptions::default()));
}

#[test]
fn request_errors_name_what_is_wrong() {
    let good = envelope::build_request(
        &header(60),
        &Request::Receive {
            shell_id: SHELL_ID.to_owned(),
            command_id: COMMAND_ID.to_owned(),
            stream: "stdout stderr".to_owned(),
        },
    );
    let cases = [
        (
            good.replace(
                envelope::action::RECEIVE,
                "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate",
            ),
            "unsupported action",
        ),
        (
            good.replace("<w:SelectorSet>", "<w:Ignored>")
                .replace("</w:SelectorSet>", "</w:Ignored>"),
            "missing ShellId",
        ),
        (good.replace(" CommandId=", " Other="), "missing CommandId"),
        (good.replace("PT60S", "PT60"), "invalid OperationTimeout"),
        (
            good.replace("uuid:11111111", "uuid:zz111111"),
            "invalid MessageID",
        ),
        (good.replace("153600", "big"), "invalid MaxEnvelopeSize"),
        (good.replace("</s:Envelope>", ""), "malformed xml"),
        (
            good.replace(
                "http://www.w3.org/2003/05/soap-envelope",
                "http://schemas.xmlsoap.org/soap/envelope/",
            ),
            "invalid Envelope",
        ),
        (
            "<html><body>502 Bad Gateway</body></html>".to_owned(),
            "invalid Envelope",
        ),
        (String::new(), "malformed xml"),
    ];
    for (xml, expected) in cases {
        let err = envelope::parse_request(xml.as_bytes())
            .map(|_| ())
            .expect_err(expected);
        assert!(
            err.to_string().starts_with(expected),
            "{err} (expected {expected})"
        );
    }
}

fn chunk(stream: Stream, data: &[u8], end: bool) -> StreamChunk {
    StreamChunk {
        stream,
        command_id: Some(COMMAND_ID.to_owned()),
        data: data.to_vec(),
        end,
    }
}

fn parse(kind: ResponseKind, fixture: &str) -> Result<Response, EnvelopeError> {
    envelope::parse_response(kind, &read_fixture(&format!("responses/{fixture}")))
}

#[test]
fn responses_parse_from_fixtures() {
    let cases: Vec<(ResponseKind, &str, Response)> = vec![
        (
            ResponseKind::Create,
            "create.xml",
            Response::Created {
                shell_id: SHELL_ID.to_owned(),
            },
        ),
        (
            ResponseKind::Create,
            "create_selector_only.xml",
            Response::Created {
                shell_id: "0B7C9E2D-1A44-4F8E-A0B3-6C5D7E8F9A01".to_owned(),
            },
        ),
        (ResponseKind::Delete, "delete.xml", Response::Deleted),
        (
            ResponseKind::Command,
            "command.xml",
            Response::CommandStarted {
                command_id: COMMAND_ID.to_owned(),
            },
        ),
        (ResponseKind::Send, "send.xml", Response::Sent),
        (ResponseKind::Signal, "signal.xml", Response::Signalled),
        (
            ResponseKind::Receive,
            "receive_multi_chunk.xml",
            Response::Received(ReceiveOutput {
                chunks: vec![
                    chunk(
                        Stream::Stdout,
                        b"Name                 State   CPUUsage(%)\r\n",
                        false,
                    ),
                    chunk(
                        Stream::Stdout,
                        b"----                 -----   -----------\r\n",
                        false,
                    ),
                    chunk(Stream::Stderr, b"warning: slow disk\r\n", false),
                    chunk(Stream::Stdout, b"web01                Running 3\r\n", false),
                ],
                state: Some(CommandState {
                    command_id: Some(COMMAND_ID.to_owned()),
                    done: false,
                    exit_code: None,
                }),
            }),
        ),
        (
            ResponseKind::Receive,
            "receive_done.xml",
            Response::Received(ReceiveOutput {
                chunks: vec![
                    chunk(
                        Stream::Stdout,
                        b"{\"ok\":false,\"error\":{\"code\":\"VmNotFound\"}}\r\n",
                        false,
                    ),
                    chunk(Stream::Stdout, b"", true),
                    chunk(Stream::Stderr, b"", true),
                ],
                state: Some(CommandState {
                    command_id: Some(COMMAND_ID.to_owned()),
                    done: true,
                    exit_code: Some(3),
                }),
            }),
        ),
        (
            ResponseKind::Receive,
            "receive_other_client_prefixes.xml",
            Response::Received(ReceiveOutput {
                chunks: vec![
                    chunk(Stream::Stdout, b"hello world\r\n", false),
                    chunk(Stream::Stderr, b"oops", true),
                ],
                state: Some(CommandState {
                    command_id: Some(COMMAND_ID.to_owned()),
                    done: true,
                    exit_code: Some(4_294_967_295),
                }),
            }),
        ),
    ];
    for (kind, fixture, expected) in cases {
        let got = parse(kind, fixture).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(got, expected, "{fixture}");
        assert_eq!(
            envelope::parse_fault(&read_fixture(&format!("responses/{fixture}"))),
            None,
            "{fixture}"
        );
    }
}

#[test]
fn receive_with_non_ascii_stdout_split_inside_a_character() {
    let Response::Received(output) = parse(ResponseKind::Receive, "receive_non_ascii.xml").unwrap()
    else {
        panic!("not a Receive response");
    };
    assert_eq!(output.chunks.len(), 3);
    let first = std::str::from_utf8(&output.chunks[0].data);
    assert!(
        first.is_err(),
        "the fixture splits a UTF-8 sequence between chunks"
    );
    let mut stdout = Vec::new();
    output.append_stream(Stream::Stdout, &mut stdout);
    assert_eq!(
        String::from_utf8(stdout).unwrap(),
        "Grüße aus Köln – 東京 😀 ÄÖÜß\r\n"
    );
    assert!(output.done());
    assert_eq!(output.exit_code(), Some(0));
    assert!(output.chunks[2].end && output.chunks[2].data.is_empty());
}

#[test]
fn response_header_carries_relates_to() {
    let (header, _) = envelope::parse_response_with_header(
        ResponseKind::Create,
        &read_fixture("responses/create.xml"),
    )
    .unwrap();
    assert_eq!(header.relates_to, Some(REQUEST_ID));
    assert_eq!(
        header.message_id,
        Some(Uuid::from_u128(0x6A1C2E55_0F3B_4C1D_9E21_7B5D4A3C2F10))
    );
    assert_eq!(
        header.action.as_deref(),
        Some(envelope::action::CREATE_RESPONSE)
    );
}

#[test]
fn wrong_response_kind_is_an_unexpected_action() {
    let err = parse(ResponseKind::Receive, "command.xml").unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::UnexpectedAction {
            expected: envelope::action::RECEIVE_RESPONSE,
            found: envelope::action::COMMAND_RESPONSE.to_owned(),
        }
    );
    assert_eq!(
        err.to_string(),
        "unexpected action \"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse\", expected http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse"
    );
}

#[test]
fn unknown_stream_names_are_rejected() {
    let xml = String::from_utf8(read_fixture("responses/receive_done.xml"))
        .unwrap()
        .replacen("Name=\"stdout\"", "Name=\"pr\"", 1);
    let err = envelope::parse_response(ResponseKind::Receive, xml.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid Stream/@Name: unknown stream \"pr\""
    );
}

fn expect_fault(kind: ResponseKind, fixture: &str) -> WsmanFault {
    match parse(kind, fixture) {
        Err(EnvelopeError::Fault(fault)) => {
            let direct = envelope::parse_fault(&read_fixture(&format!("responses/{fixture}")));
            assert_eq!(
                direct.as_ref(),
                Some(&*fault),
                "{fixture}: parse_fault differs"
            );
            *fault
        }
        other => panic!("{fixture}: expected a fault, got {other:?}"),
    }
}

#[test]
fn faults_parse_from_fixtures_whatever_the_expected_kind() {
    let timed_out = expect_fault(ResponseKind::Receive, "fault_timed_out.xml");
    assert_eq!(
        timed_out,
        WsmanFault {
            soap_code: "s:Receiver".to_owned(),
            subcode: Some("w:TimedOut".to_owned()),
            reason: "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ".to_owned(),
            wsman_code: Some(WsmanFault::TIMED_OUT),
            message: Some("The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ".to_owned()),
            machine: Some("hv01.example.test".to_owned()),
        }
    );
    assert!(timed_out.is_timed_out() && !timed_out.is_shell_gone());
    assert_eq!(
        timed_out.to_string(),
        "WS-Man fault 2150858793 (w:TimedOut): The WS-Management service cannot complete the operation within the time specified in OperationTimeout"
    );
    for kind in [
        ResponseKind::Create,
        ResponseKind::Delete,
        ResponseKind::Command,
        ResponseKind::Send,
        ResponseKind::Signal,
    ] {
        assert_eq!(expect_fault(kind, "fault_timed_out.xml"), timed_out);
    }

    let command = expect_fault(ResponseKind::Receive, "fault_command_not_found.xml");
    assert_eq!(command.soap_code, "s:Sender");
    assert_eq!(command.subcode.as_deref(), Some("w:InvalidSelectors"));
    assert_eq!(command.wsman_code, Some(WsmanFault::INVALID_SELECTORS));
    assert!(command.is_shell_gone() && !command.is_timed_out());
    assert!(
        command
            .text()
            .starts_with("The Windows Remote Shell received a request")
    );

    let shell = expect_fault(ResponseKind::Command, "fault_shell_not_found.xml");
    assert!(shell.is_shell_gone());
    assert_eq!(
        shell.message.as_deref(),
        Some(
            "The request for the Windows Remote Shell with ShellId 9D4F3C0E-5B2A-4E11-8C7D-2A6B1F0E3D45 failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation."
        )
    );

    let quota = expect_fault(ResponseKind::Create, "fault_shell_quota.xml");
    assert_eq!(quota.wsman_code, Some(WsmanFault::QUOTA_MAX_SHELLS));
    assert!(quota.is_quota_exceeded() && !quota.is_shell_gone() && !quota.is_timed_out());
    assert!(
        quota
            .to_string()
            .contains("maximum number of 30 concurrent shells")
    );

    let operations = expect_fault(ResponseKind::Command, "fault_operations_quota_wmi.xml");
    assert_eq!(operations.wsman_code, Some(WsmanFault::SHELL_QUOTA));
    assert_eq!(operations.subcode.as_deref(), Some("w:InternalError"));
    assert!(operations.is_quota_exceeded());
    assert!(
        operations
            .message
            .as_deref()
            .unwrap()
            .starts_with("This user is allowed a maximum number of 1500")
    );
    assert_eq!(operations.machine, None);

    let denied = expect_fault(ResponseKind::Create, "fault_access_denied_de.xml");
    assert!(denied.is_access_denied());
    assert_eq!(denied.reason, "Zugriff verweigert ");
    assert_eq!(
        denied.to_string(),
        "WS-Man fault 5 (w:AccessDenied): Zugriff verweigert. Der Benutzer „BEISPIEL\\Jürgen.Weiß“ ist nicht berechtigt, die Remote-Shell zu öffnen (Größe & Berechtigungen prüfen)"
    );
    assert_eq!(denied.machine.as_deref(), Some("hv03.beispiel.test"));

    let schema = expect_fault(ResponseKind::Send, "fault_schema_validation_fr.xml");
    // The `wsman:` prefix is rewritten to the conventional `w:`; the first Reason text is kept.
    assert_eq!(schema.subcode.as_deref(), Some("w:SchemaValidationError"));
    assert_eq!(schema.wsman_code, Some(WsmanFault::SCHEMA_VALIDATION));
    assert!(
        schema
            .reason
            .starts_with("Le code XML SOAP du message ne correspond pas à la définition")
    );
    assert_eq!(
        schema.message.as_deref(),
        Some(
            "La valeur « PT-5S » de l’élément OperationTimeout n’est pas valide : durée négative. 日本語のメッセージ ✓"
        )
    );
}

#[test]
fn fault_envelopes_from_the_builder_parse_back() {
    for fault in [
        WsmanFault::timed_out().with_machine("sim-host"),
        WsmanFault::shell_not_found(SHELL_ID),
        WsmanFault::command_not_found(),
        WsmanFault::shell_quota(30),
        WsmanFault::operation_quota(1500),
        WsmanFault::access_denied(),
        WsmanFault::schema_validation("Ungültig: « x »"),
        WsmanFault::action_not_supported("urn:x"),
        WsmanFault::internal_error("boom <&>"),
        WsmanFault::new("s:Receiver", None, ""),
    ] {
        let xml = envelope::build_fault(REQUEST_ID, Uuid::from_u128(7), &fault);
        assert_eq!(envelope::parse_fault(xml.as_bytes()).as_ref(), Some(&fault));
        let err = envelope::parse_response(ResponseKind::Receive, xml.as_bytes()).unwrap_err();
        assert_eq!(err, EnvelopeError::Fault(Box::new(fault)));
    }
}

#[test]
fn parse_fault_accepts_a_bare_fault_and_rejects_non_faults() {
    let bare = br#"<s:Fault xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858793"/></s:Detail></s:Fault>"#;
    let fault = envelope::parse_fault(bare).unwrap();
    assert!(fault.is_timed_out());
    assert_eq!(fault.soap_code, "");
    assert_eq!(envelope::parse_fault(b"not xml <<<"), None);
    assert_eq!(envelope::parse_fault(b""), None);
    assert_eq!(
        envelope::parse_fault(&read_fixture("responses/receive_done.xml")),
        None
    );
}

#[test]
fn server_side_responses_parse_back() {
    let cases = [
        Response::Created {
            shell_id: SHELL_ID.to_owned(),
        },
        Response::Deleted,
        Response::CommandStarted {
            command_id: COMMAND_ID.to_owned(),
        },
        Response::Sent,
        Response::Signalled,
        Response::Received(ReceiveOutput::default()),
        Response::Received(ReceiveOutput {
            chunks: vec![
                chunk(Stream::Stdout, "é".as_bytes(), false),
                chunk(Stream::Stderr, b"", true),
            ],
            state: Some(CommandState {
                command_id: None,
                done: true,
                exit_code: Some(-1),
            }),
        }),
    ];
    for response in cases {
        let kind = ResponseKind::from(&response);
        let xml = envelope::build_response(REQUEST_ID, Uuid::from_u128(9), &response);
        let (header, parsed) = envelope::parse_response_with_header(kind, xml.as_bytes()).unwrap();
        assert_eq!(parsed, response);
        assert_eq!(header.relates_to, Some(REQUEST_ID));
        assert_eq!(header.message_id, Some(Uuid::from_u128(9)));
    }
    // Windows' shape for CreateResponse.
    let created = envelope::build_response(
        REQUEST_ID,
        Uuid::from_u128(9),
        &Response::Created {
            shell_id: SHELL_ID.to_owned(),
        },
    );
    assert!(created.contains("<x:ResourceCreated>"));
    assert!(created.contains(
        "<w:Selector Name=\"ShellId\">9D4F3C0E-5B2A-4E11-8C7D-2A6B1F0E3D45</w:Selector>"
    ));
    assert!(
        created
            .contains("<rsp:Shell><rsp:ShellId>9D4F3C0E-5B2A-4E11-8C7D-2A6B1F0E3D45</rsp:ShellId>")
    );
}

/// Every `tests/fixtures/clixml/*.clixml` decodes to the text in the `.txt` beside it.
#[test]
fn clixml_fixtures_decode() {
    let dir = fixtures().join("clixml");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".clixml").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures missing: {names:?}");
    for name in names {
        let data = read_fixture(&format!("clixml/{name}.clixml"));
        assert_eq!(clixml::is_clixml(&data), name != "plain_stderr", "{name}");
        check_fixture(&format!("clixml/{name}.txt"), &clixml::decode(&data));
    }
}

#[test]
fn clixml_decoding_details() {
    let decode = |name: &str| clixml::decode(&read_fixture(&format!("clixml/{name}.clixml")));
    assert_eq!(decode("progress_only"), "");
    let error = decode("write_error_script");
    assert!(error.starts_with("C:\\ProgramData\\Aetherv\\scripts\\New-AethervVm.ps1 : VM 'web01' already exists on host HV01\n"));
    assert!(
        !error.contains('\r') && !error.contains("_x000D_") && !error.contains("Preparing modules")
    );
    let thrown = decode("thrown_exception");
    assert!(thrown.starts_with("Disk 'D:' on HV01 has 2.1 GB free < 40 GB required & the copy was aborted\nAt line:14 char:5\n"));
    assert_eq!(
        decode("error_record_object"),
        "Cannot find path 'C:\\ClusterStorage\\Volume1\\Golden\\ws2025.vhdx' because it does not exist.\nHyper-V was unable to find a virtual machine with name \"web01\".\n"
    );
    let streams = decode("warnings_verbose_information");
    assert_eq!(
        streams,
        "WARNING: Host HV02 is paused for maintenance; the VM will be placed on HV03.\nVERBOSE: Performing the operation \"New-VM\" on target \"web01\".\nDEBUG: Using VHDX template C:\\ClusterStorage\\Volume1\\Golden\\ws2022.vhdx\nProvisioning step RegisterVM finished in 3.2 s\nWARNING: Checkpoint 'before-update' is older than 30 days\n"
    );
    let non_ascii = decode("non_ascii");
    assert!(non_ascii.contains("„C:\\Überprüfung\\Größe_Ä.txt“"));
    assert!(non_ascii.contains("東京のホスト HV-東01 に接続できません 🚀 (état: échec)\n"));
    assert!(non_ascii.contains("Literal _x000D_ stays, tab:\tend\n"));
    assert!(non_ascii.ends_with("WARNING: Kein Speicherplatz auf „D:“ – nur 2 GB frei\n"));
    assert_eq!(
        decode("multiple_documents"),
        "first script failed\nrobocopy: ERROR 5 (0x00000005) Access is denied.\nWARNING: retrying with -Force\nsecond attempt failed\n"
    );
    let truncated = decode("malformed_truncated");
    assert!(truncated.starts_with("Start-VM : The virtual machine could not be started\nbecause the hypervisor is not running\n"));
    assert!(truncated.contains("FromStdErr: (web01) [Start-VM], Virtua"));
    let mismatched = decode("malformed_mismatched_tags");
    assert!(mismatched.starts_with("Stop-VM : Access denied\n"));
    assert!(mismatched.contains("unterminated & broken"));
    assert_eq!(
        decode("plain_stderr"),
        "'foo' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

/// Any string XML 1.0 can carry (the builder replaces the others with U+FFFD), biased towards
/// markup characters, whitespace and non-ASCII.
fn xml_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x{FFFE}\\x{FFFF}]{0,24}",
        2 => proptest::collection::vec(
            prop_oneof![
                Just("<"), Just(">"), Just("&"), Just("\""), Just("'"), Just("]]>"), Just("&amp;"),
                Just("\r\n"), Just("\r"), Just("\n"), Just("\t"), Just(" "), Just("é"), Just("東"),
                Just("😀"), Just("\u{85}"), Just("\u{2028}"), Just("x"), Just("<!--"), Just("&#xD;"),
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// Identifiers and URIs: read back trimmed (they are never padded with whitespace).
fn xml_token() -> impl Strategy<Value = String> {
    xml_text().prop_map(|s| s.trim().to_owned())
}

fn non_empty_token() -> impl Strategy<Value = String> {
    xml_token().prop_filter("non-empty", |s| !s.is_empty())
}

fn duration_ms() -> impl Strategy<Value = Duration> {
    (0u64..100_000_000).prop_map(Duration::from_millis)
}

fn arb_header() -> impl Strategy<Value = RequestHeader> {
    (
        xml_token(),
        any::<u128>(),
        xml_token(),
        any::<u32>(),
        duration_ms(),
        xml_text(),
    )
        .prop_map(
            |(to, id, resource_uri, max_envelope_size, operation_timeout, locale)| RequestHeader {
                to,
                message_id: Uuid::from_u128(id),
                resource_uri,
                max_envelope_size,
                operation_timeout,
                locale,
            },
        )
}

fn arb_signal() -> impl Strategy<Value = Signal> {
    prop_oneof![
        Just(Signal::Terminate),
        Just(Signal::CtrlC),
        Just(Signal::CtrlBreak)
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    let create = (
        any::<u32>(),
        any::<bool>(),
        proptest::option::of(xml_text()),
        proptest::collection::vec((xml_text(), xml_text()), 0..4),
        xml_text(),
        xml_text(),
        proptest::option::of(duration_ms()),
    )
        .prop_map(
            |(
                codepage,
                no_profile,
                working_directory,
                environment,
                input_streams,
                output_streams,
                idle_timeout,
            )| {
                Request::Create(ShellOptions {
                    codepage,
                    no_profile,
                    working_directory,
                    environment,
                    input_streams,
                    output_streams,
                    idle_timeout,
                })
            },
        );
    prop_oneof![
        create,
        xml_token().prop_map(|shell_id| Request::Delete { shell_id }),
        (
            xml_token(),
            xml_text(),
            proptest::collection::vec(xml_text(), 0..5),
            any::<bool>()
        )
            .prop_map(
                |(shell_id, command, arguments, skip_cmd_shell)| Request::Command {
                    shell_id,
                    command,
                    arguments,
                    skip_cmd_shell,
                }
            ),
        (
            xml_token(),
            xml_token(),
            xml_text(),
            proptest::collection::vec(any::<u8>(), 0..512),
            any::<bool>()
        )
            .prop_map(|(shell_id, command_id, stream, data, end)| Request::Send {
                shell_id,
                command_id,
                stream,
                data,
                end,
            }),
        (xml_token(), xml_token(), xml_text()).prop_map(|(shell_id, command_id, stream)| {
            Request::Receive {
                shell_id,
                command_id,
                stream,
            }
        }),
        (xml_token(), xml_token(), arb_signal()).prop_map(|(shell_id, command_id, signal)| {
            Request::Signal {
                shell_id,
                command_id,
                signal,
            }
        }),
    ]
}

fn arb_chunk() -> impl Strategy<Value = StreamChunk> {
    (
        prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)],
        proptest::option::of(xml_token()),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(|(stream, command_id, data, end)| StreamChunk {
            stream,
            command_id,
            data,
            end,
        })
}

fn arb_response() -> impl Strategy<Value = Response> {
    let state = (
        proptest::option::of(xml_token()),
        any::<bool>(),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(command_id, done, exit_code)| CommandState {
            command_id,
            done,
            exit_code,
        });
    prop_oneof![
        non_empty_token().prop_map(|shell_id| Response::Created { shell_id }),
        Just(Response::Deleted),
        non_empty_token().prop_map(|command_id| Response::CommandStarted { command_id }),
        Just(Response::Sent),
        (
            proptest::collection::vec(arb_chunk(), 0..5),
            proptest::option::of(state)
        )
            .prop_map(|(chunks, state)| Response::Received(ReceiveOutput { chunks, state })),
        Just(Response::Signalled),
    ]
}

fn arb_fault() -> impl Strategy<Value = WsmanFault> {
    (
        prop_oneof![Just("s:Sender"), Just("s:Receiver")],
        proptest::option::of(prop_oneof![
            Just("w:TimedOut"),
            Just("w:InvalidSelectors"),
            Just("a:ActionNotSupported"),
            Just("x:Unknown"),
            Just("Plain"),
        ]),
        xml_text(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(xml_text()),
        proptest::option::of(xml_text()),
    )
        .prop_map(
            |(soap_code, subcode, reason, wsman_code, message, machine)| WsmanFault {
                soap_code: soap_code.to_owned(),
                subcode: subcode.map(str::to_owned),
                reason,
                wsman_code,
                message,
                machine,
            },
        )
}

fn arb_kind() -> impl Strategy<Value = ResponseKind> {
    prop_oneof![
        Just(ResponseKind::Create),
        Just(ResponseKind::Delete),
        Just(ResponseKind::Command),
        Just(ResponseKind::Send),
        Just(ResponseKind::Receive),
        Just(ResponseKind::Signal),
    ]
}

/// A valid envelope with some bytes replaced and possibly truncated.
fn mutated(xml: String, edits: Vec<(usize, u8)>, cut: usize) -> Vec<u8> {
    let mut bytes = xml.into_bytes();
    for (at, byte) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
    }
    let keep = bytes.len().saturating_sub(cut % 64);
    bytes.truncate(keep);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trip(header in arb_header(), request in arb_request()) {
        let xml = envelope::build_request(&header, &request);
        let (h, r) = envelope::parse_request(xml.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(h, header);
        prop_assert_eq!(r, request);
    }

    #[test]
    fn response_round_trip(relates_to in any::<u128>(), id in any::<u128>(), response in arb_response()) {
        let kind = ResponseKind::from(&response);
        let xml = envelope::build_response(Uuid::from_u128(relates_to), Uuid::from_u128(id), &response);
        let (header, parsed) = envelope::parse_response_with_header(kind, xml.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(parsed, response);
        prop_assert_eq!(header.relates_to, Some(Uuid::from_u128(relates_to)));
        prop_assert_eq!(header.message_id, Some(Uuid::from_u128(id)));
    }

    #[test]
    fn fault_round_trip(fault in arb_fault(), kind in arb_kind()) {
        let xml = envelope::build_fault(Uuid::from_u128(1), Uuid::from_u128(2), &fault);
        prop_assert_eq!(envelope::parse_fault(xml.as_bytes()), Some(fault.clone()));
        prop_assert_eq!(envelope::parse_response(kind, xml.as_bytes()), Err(EnvelopeError::Fault(Box::new(fault))));
    }

    #[test]
    fn forbidden_characters_become_replacement_characters(c in prop_oneof![0u32..9, 11u32..13, 14u32..32, 0xFFFEu32..0x10000]) {
        let c = char::from_u32(c).unwrap();
        let request = Request::Command {
            shell_id: SHELL_ID.to_owned(),
            command: format!("a{c}b"),
            arguments: vec![],
            skip_cmd_shell: true,
        };
        let xml = envelope::build_request(&header(60), &request);
        let (_, parsed) = envelope::parse_request(xml.as_bytes()).unwrap();
        let Request::Command { command, .. } = parsed else { unreachable!() };
        prop_assert_eq!(command, "a\u{FFFD}b");
    }

    #[test]
    fn framing_round_trip(signature in any::<[u8; 16]>(), sealed in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let body = framing::encode(&signature, &sealed, sealed.len());
        let decoded = framing::decode(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded.signature, &signature[..]);
        prop_assert_eq!(decoded.sealed, &sealed[..]);
        prop_assert_eq!(decoded.original_length, sealed.len());
        prop_assert_eq!(decoded.original_content_type, "application/soap+xml;charset=UTF-8");
    }

    #[test]
    fn framing_decode_never_panics_on_damaged_bodies(
        signature in any::<[u8; 16]>(),
        sealed in proptest::collection::vec(any::<u8>(), 0..256),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let mut body = framing::encode(&signature, &sealed, sealed.len());
        for (at, byte) in edits {
            let i = at % body.len();
            body[i] = byte;
        }
        body.truncate(body.len().saturating_sub(cut % 300));
        let _ = framing::decode(&body);
    }

    #[test]
    fn clixml_decode_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("#< CLIXML\r\n".to_owned()),
                Just("<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">".to_owned()),
                Just("</Objs>".to_owned()),
                Just("<S S=\"Error\">".to_owned()),
                Just("<S S=\"warning\">".to_owned()),
                Just("</S>".to_owned()),
                Just("<Obj S=\"Error\" RefId=\"0\"><ToString>".to_owned()),
                Just("</ToString></Obj>".to_owned()),
                Just("_x000D__x000A_".to_owned()),
                Just("_xD83D_".to_owned()),
                Just("_xDE00_".to_owned()),
                Just("&amp;&lt;&#x41;&bogus;".to_owned()),
                "[^<>&]{0,8}",
                "\\PC{0,4}",
            ],
            0..24,
        ),
        junk in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut data = parts.concat().into_bytes();
        data.extend_from_slice(&junk);
        let _ = clixml::decode(&data);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), kind in arb_kind()) {
        let _ = envelope::parse_request(&bytes);
        let _ = envelope::parse_response(kind, &bytes);
        let _ = envelope::parse_fault(&bytes);
        let _ = clixml::decode(&bytes);
        let _ = framing::decode(&bytes);
    }

    #[test]
    fn parsers_never_panic_on_damaged_envelopes(
        header in arb_header(),
        request in arb_request(),
        response in arb_response(),
        fault in arb_fault(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
        kind in arb_kind(),
    ) {
        let request_xml = mutated(envelope::build_request(&header, &request), edits.clone(), cut);
        let _ = envelope::parse_request(&request_xml);
        let response_xml = mutated(envelope::build_response(Uuid::nil(), Uuid::nil(), &response), edits.clone(), cut);
        let _ = envelope::parse_response(kind, &response_xml);
        let fault_xml = mutated(envelope::build_fault(Uuid::nil(), Uuid::nil(), &fault), edits, cut);
        let _ = envelope::parse_response(kind, &fault_xml);
        let _ = envelope::parse_fault(&fault_xml);
    }
}
