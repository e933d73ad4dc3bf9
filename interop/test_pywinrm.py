"""pywinrm (the client Ansible uses) and our example CLI against the simulated host.

Both clients run the same cases over HTTP with NTLM and message encryption, and over HTTPS with
Basic: stdout, stderr, exit codes, stdin, non-ASCII output, a 5 MB output, a wrong password.
"""

import base64
import os
import subprocess

import pytest
import winrm
from winrm.exceptions import InvalidCredentialsError

from conftest import PASSWORD, USER

NON_ASCII = "héllo wörld ✓ Ωmega 日本"
BIG = 5_000_000
TIMEOUT = 120


def pywinrm_session(host, password=PASSWORD):
    if host.endpoint.startswith("https"):
        return winrm.Session(
            host.endpoint, auth=(USER, password), transport="basic",
            server_cert_validation="ignore",
        )
    return winrm.Session(
        host.endpoint, auth=(USER, password), transport="ntlm", message_encryption="always"
    )


def pywinrm_protocol(host):
    if host.endpoint.startswith("https"):
        return winrm.Protocol(
            host.endpoint, transport="basic", username=USER, password=PASSWORD,
            server_cert_validation="ignore",
        )
    return winrm.Protocol(
        host.endpoint, transport="ntlm", username=USER, password=PASSWORD,
        message_encryption="always",
    )


def run_example(host, example, command, powershell=False, stdin=None, password=PASSWORD,
                extra=()):
    args = [example, "--endpoint", host.endpoint, "--user", USER, "--password-env",
            "SIM_TEST_PASSWORD"]
    if host.endpoint.startswith("https"):
        args += ["--auth", "basic", "--insecure"]
    else:
        args += ["--auth", "ntlm", "--encryption", "always"]
    if powershell:
        args.append("--powershell")
    args += list(extra)
    stdin_file = None
    if stdin is not None:
        stdin_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"stdin-{os.getpid()}.txt")
        with open(stdin_file, "wb") as f:
            f.write(stdin)
        args += ["--stdin-file", stdin_file]
    args += ["--"] + command
    env = dict(os.environ, SIM_TEST_PASSWORD=password)
    try:
        return subprocess.run(args, env=env, capture_output=True, timeout=TIMEOUT)
    finally:
        if stdin_file:
            os.unlink(stdin_file)


HOSTS = ["http_host", "https_host"]


@pytest.mark.parametrize("host_fixture", HOSTS)
class TestPywinrm:
    def test_cmd_stdout_and_exit_codes(self, host_fixture, request):
        host = request.getfixturevalue(host_fixture)
        s = pywinrm_session(host)
        r = s.run_cmd("echo", ["hello", "from", "cmd"])
        assert r.status_code == 0
        assert r.std_out == b"hello from cmd\r\n"
        r = s.run_cmd("exit /b 7")
        assert r.status_code == 7
        r = s.run_cmd("hostname")
        assert r.std_out.decode().strip().lower() == host.name.lower()

    def test_ps_stdout_stderr_exit(self, host_fixture, request):
        host = request.getfixturevalue(host_fixture)
        s = pywinrm_session(host)
        r = s.run_ps(f"Write-Output '{NON_ASCII}'")
        assert r.status_code == 0
        assert r.std_out.decode("utf-8") == NON_ASCII + "\r\n"
        r = s.run_ps("Write-Output 'before'; Write-Error 'it failed'")
        assert r.std_out.decode() == "before\r\n"
        assert b"it failed" in r.std_err
        assert b"CLIXML" not in r.std_err
        assert r.status_code == 1
        r = s.run_ps("exit 42")
        assert r.status_code == 42

    def test_ps_unknown_command_fails_like_powershell(self, host_fixture, request):
        host = request.getfixturevalue(host_fixture)
        r = pywinrm_session(host).run_ps("Get-NoSuchThing")
        assert r.status_code == 1
        assert b"is not recognized" in r.std_err

    def test_stdin(self, host_fixture, request):
        host = request.getfixturevalue(host_fixture)
        p = pywinrm_protocol(host)
        shell = p.open_shell(codepage=65001)
        try:
            script = "$input"
            encoded = base64.b64encode(script.encode("utf-16-le")).decode()
            cmd = p.run_command(shell, f"powershell -encodedcommand {encoded}")
            p.send_command_input(shell, cmd, f"line one\r\n{NON_ASCII}\r\n".encode(), end=True)
            out, err, code = p.get_command_output(shell, cmd)
            p.cleanup_command(shell, cmd)
        finally:
            p.close_shell(shell)
        assert code == 0, err
        assert out.decode("utf-8") == f"line one\r\n{NON_ASCII}\r\n"

    def test_large_output(self, host_fixture, request):
        host = request.getfixturevalue(host_fixture)
        r = pywinrm_session(host).run_ps(f"Write-Output ('x' * {BIG})")
        assert r.status_code == 0
        assert r.std_out == b"x" * BIG + b"\r\n"

    def test_wrong_password_is_refused(self, host_fixture, request):
        host = request.getfixturevalue(host_fixture)
        with pytest.raises(InvalidCredentialsError):
            pywinrm_session(host, password="not the password").run_cmd("hostname")


@pytest.mark.parametrize("host_fixture", HOSTS)
class TestExampleCli:
    def test_cmd_stdout_and_exit_codes(self, host_fixture, request, example):
        host = request.getfixturevalue(host_fixture)
        r = run_example(host, example, ["echo", "hello", "from", "cmd"])
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"hello from cmd\r\n"
        r = run_example(host, example, ["exit", "/b", "7"])
        assert r.returncode == 7

    def test_ps_stdout_stderr_exit(self, host_fixture, request, example):
        host = request.getfixturevalue(host_fixture)
        r = run_example(host, example, ["Write-Output", f"'{NON_ASCII}'"], powershell=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode("utf-8") == NON_ASCII + "\r\n"
        r = run_example(host, example, ["Write-Output 'before'; Write-Error 'it failed'"],
                        powershell=True)
        assert r.returncode == 1
        assert r.stdout == b"before\r\n"
        assert "it failed" in r.stderr.decode()
        assert "CLIXML" not in r.stderr.decode()
        r = run_example(host, example, ["exit 42"], powershell=True)
        assert r.returncode == 42

    def test_stdin(self, host_fixture, request, example):
        host = request.getfixturevalue(host_fixture)
        data = f"line one\r\n{NON_ASCII}\r\n".encode()
        r = run_example(host, example, ["$input"], powershell=True,
                        stdin=data)
        assert r.returncode == 0, r.stderr
        assert r.stdout == data

    def test_large_output(self, host_fixture, request, example):
        host = request.getfixturevalue(host_fixture)
        r = run_example(host, example, [f"Write-Output ('x' * {BIG})"], powershell=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"x" * BIG + b"\r\n"

    def test_repeat_reports_requests_and_one_handshake(self, host_fixture, request, example):
        host = request.getfixturevalue(host_fixture)
        r = run_example(host, example, ["Write-Output 'ok'"], powershell=True,
                        extra=["--repeat", "20"])
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"ok\r\n" * 20
        line = r.stderr.decode().strip().splitlines()[-1]
        fields = dict(part.split("=", 1) for part in line.split())
        assert fields["commands"] == "20"
        expected_handshakes = 0 if host.endpoint.startswith("https") else 1
        assert int(fields["handshakes"]) == expected_handshakes
        # Warm-up (handshake + shell) plus at most 3 requests per command.
        assert int(fields["requests"]) <= 2 + 1 + 3 * 20
        assert float(fields["seconds"]) > 0

    def test_wrong_password_is_refused(self, host_fixture, request, example):
        host = request.getfixturevalue(host_fixture)
        r = run_example(host, example, ["hostname"], password="not the password")
        assert r.returncode == 125
        err = r.stderr.decode()
        assert err.startswith("error: ") and "authentication failed" in err
        assert "not the password" not in err
