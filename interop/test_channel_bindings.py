"""TLS channel bindings (RFC 5929 `tls-server-end-point`, "Extended Protection") over HTTPS.

aetherv-hostsim with `--tls --require-channel-bindings` behaves like a Windows host with
`CbtHardeningLevel=Strict`:

- pywinrm with NTLM (requests-ntlm and pyspnego put `MsvAvChannelBindings` in the NTLMv2
  response) passes; the same client with `send_cbt=False` is refused;
- our example CLI (NTLM) passes;
- a host without the strict mode (`Relaxed`, the default) accepts the client without bindings,
  so the refusal above comes from the strict mode and nothing else.

The Kerberos side (GSSAPI channel bindings) is in test_kerberos.py, which has the KDC.
"""

import os
import subprocess

import pytest
import winrm
from winrm.exceptions import InvalidCredentialsError

from conftest import PASSWORD, USER, SimHost

TIMEOUT = 120


@pytest.fixture(scope="module")
def strict_host():
    host = SimHost(tls=True, extra=["--require-channel-bindings"])
    assert host.endpoint.startswith("https://127.0.0.1:")
    yield host
    host.stop()


def ntlm_session(host, send_cbt=True):
    return winrm.Session(
        host.endpoint, auth=(USER, PASSWORD), transport="ntlm",
        server_cert_validation="ignore", send_cbt=send_cbt,
    )


def run_example(host, example, command):
    args = [example, "--endpoint", host.endpoint, "--auth", "ntlm", "--insecure",
            "--user", USER, "--password-env", "SIM_TEST_PASSWORD", "--repeat", "3",
            "--", *command]
    env = dict(os.environ, SIM_TEST_PASSWORD=PASSWORD)
    return subprocess.run(args, env=env, capture_output=True, timeout=TIMEOUT)


def test_pywinrm_ntlm_with_channel_bindings_passes_strict(strict_host):
    r = ntlm_session(strict_host).run_cmd("echo", ["bound", "to", "tls"])
    assert r.status_code == 0, r.std_err
    assert r.std_out == b"bound to tls\r\n"
    r = ntlm_session(strict_host).run_ps("Write-Output 'ps over cbt'; exit 4")
    assert r.status_code == 4
    assert r.std_out == b"ps over cbt\r\n"


def test_pywinrm_ntlm_without_channel_bindings_is_refused_in_strict_mode(strict_host):
    with pytest.raises(InvalidCredentialsError):
        ntlm_session(strict_host, send_cbt=False).run_cmd("hostname")


def test_our_client_passes_strict(strict_host, example):
    r = run_example(strict_host, example, ["echo", "ours"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ours\r\n" * 3
    fields = dict(part.split("=", 1) for part in r.stderr.decode().split()[-4:])
    # One handshake for the connection, as without bindings.
    assert fields["handshakes"] == "1", r.stderr


def test_relaxed_host_accepts_a_client_without_bindings(https_host):
    r = ntlm_session(https_host, send_cbt=False).run_cmd("echo", ["relaxed"])
    assert r.status_code == 0
    assert r.std_out == b"relaxed\r\n"
    # And checks the bindings a client does send.
    r = ntlm_session(https_host).run_cmd("echo", ["checked"])
    assert r.std_out == b"checked\r\n"


def test_strict_mode_needs_tls():
    # The hostsim refuses --require-channel-bindings without --tls: there is no channel.
    with pytest.raises(RuntimeError, match="tls"):
        SimHost(tls=False, extra=["--require-channel-bindings"])
