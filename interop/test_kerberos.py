"""Kerberos interop against a real MIT KDC (see kdc.py), all on loopback.

- our example CLI (Kerberos and Negotiate; keytab, password, ticket cache) against
  aetherv-hostsim serving Kerberos with a service keytab, message encryption over HTTP;
- pywinrm (transport='kerberos', message_encryption='always', pykerberos) against the same
  host: the cases of the NTLM interop;
- our client against an independent WinRM listener built on pyspnego + python-gssapi
  (krb_listener.py), which decrypts our messages with pyspnego's WinRM unwrap;
- the errors: a stale keytab, an unknown SPN, an IP address as host name, no ticket.
"""

import base64
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import PASSWORD, USER, _binary
from kdc import KEYTAB_USER, REALM, SERVICE_HOST, SPN, USER as KRB_USER, USER_PASSWORD, Kdc

NON_ASCII = "héllo wörld ✓ Ωmega 日本"
BIG = 5_000_000
TIMEOUT = 120
STARTUP_TIMEOUT = 60


@pytest.fixture(scope="module")
def kdc():
    k = Kdc()
    yield k
    k.stop()


@pytest.fixture(scope="module")
def ccache(kdc):
    """A ticket cache with a TGT of the password user; the tests' process uses it (pywinrm)."""
    path = f"FILE:{kdc.dir}/user-ccache"
    kdc.kinit(path)
    saved = {k: os.environ.get(k) for k in ("KRB5_CONFIG", "KRB5CCNAME")}
    os.environ["KRB5_CONFIG"] = kdc.krb5_conf
    os.environ["KRB5CCNAME"] = path
    yield path
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class KrbHost:
    """aetherv-hostsim with one host accepting Kerberos (and NTLM) with the service keytab."""

    def __init__(self, kdc, keytab=None, extra=()):
        env = dict(kdc.env, SIM_PASSWORD=PASSWORD)
        env.pop("KRB5_KDC_PROFILE", None)
        args = [
            _binary("AETHERV_HOSTSIM"),
            "--hosts", "1", "--vms-per-host", "2", "--listen", "127.0.0.1:0",
            "--user", USER, "--password-env", "SIM_PASSWORD", "--seed", "7",
            "--keytab", keytab or kdc.service_keytab, *extra,
        ]
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("host="):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"hostsim exited: {self.proc.stderr.read()}")
        fields = dict(part.split("=", 1) for part in line.split())
        self.name = fields["host"]
        self.ip_endpoint = fields["endpoint"]
        # Kerberos names the host, not its address: HTTP/localhost is the SPN.
        self.endpoint = self.ip_endpoint.replace("127.0.0.1", SERVICE_HOST)
        self.counters = None

    def stop_with_counters(self) -> dict:
        """Stops the host and returns its counters (requests, connections, handshakes, ...)."""
        err = self.stop()
        line = next(l for l in err.splitlines() if l.startswith("host="))
        return {k: int(v) for k, v in (p.split("=", 1) for p in line.split()[1:])}

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture(scope="module")
def krb_host(kdc):
    host = KrbHost(kdc)
    yield host
    host.stop()


def example_env(kdc, **extra):
    env = dict(kdc.env, **extra)
    env.pop("KRB5_KDC_PROFILE", None)
    return env


def run_example(kdc, endpoint, example, command, auth="kerberos", keytab=None,
                user=f"{KEYTAB_USER}@{REALM}", password=None, powershell=False, extra=(),
                env_extra=None):
    args = [example, "--endpoint", endpoint, "--auth", auth, "--encryption", "always"]
    env = example_env(kdc, **(env_extra or {}))
    if keytab is not None:
        args += ["--keytab", keytab, "--user", user]
    elif password is not None:
        args += ["--user", user, "--password-env", "KRB_TEST_PASSWORD"]
        env["KRB_TEST_PASSWORD"] = password
    if powershell:
        args.append("--powershell")
    args += list(extra)
    args += ["--"] + command
    return subprocess.run(args, env=env, capture_output=True, timeout=TIMEOUT)


class TestExampleCliKerberos:
    def test_keytab_runs_commands_with_encryption(self, kdc, krb_host, example):
        r = run_example(kdc, krb_host.endpoint, example, ["echo", "hello", "kerberos"],
                        keytab=kdc.user_keytab)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"hello kerberos\r\n"
        r = run_example(kdc, krb_host.endpoint, example, [f"Write-Output '{NON_ASCII}'; exit 3"],
                        keytab=kdc.user_keytab, powershell=True)
        assert r.returncode == 3, r.stderr
        assert r.stdout.decode("utf-8") == NON_ASCII + "\r\n"

    def test_negotiate_with_a_password(self, kdc, krb_host, example):
        r = run_example(kdc, krb_host.endpoint, example, ["hostname"], auth="negotiate",
                        user=f"{KRB_USER}@{REALM}", password=USER_PASSWORD)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().strip().lower() == krb_host.name.lower()

    def test_default_ticket_cache(self, kdc, krb_host, example):
        cache = f"FILE:{kdc.dir}/cli-ccache"
        kdc.kinit(cache)
        r = run_example(kdc, krb_host.endpoint, example, ["echo", "from", "cache"],
                        env_extra={"KRB5CCNAME": cache})
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"from cache\r\n"

    def test_large_output(self, kdc, krb_host, example):
        r = run_example(kdc, krb_host.endpoint, example, [f"Write-Output ('x' * {BIG})"],
                        keytab=kdc.user_keytab, powershell=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"x" * BIG + b"\r\n"

    @pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
    def test_repeat_reports_one_handshake(self, kdc, krb_host, example, auth):
        r = run_example(kdc, krb_host.endpoint, example, ["Write-Output 'ok'"], auth=auth,
                        keytab=kdc.user_keytab, powershell=True, extra=["--repeat", "20"])
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"ok\r\n" * 20
        line = r.stderr.decode().strip().splitlines()[-1]
        fields = dict(part.split("=", 1) for part in line.split())
        assert fields["commands"] == "20"
        assert int(fields["handshakes"]) == 1
        # Warm-up (one handshake request + shell) plus at most 3 requests per command.
        assert int(fields["requests"]) <= 1 + 1 + 3 * 20

    def test_stale_keytab_is_refused_clearly(self, kdc, krb_host, example):
        r = run_example(kdc, krb_host.endpoint, example, ["hostname"], keytab=kdc.stale_keytab)
        assert r.returncode == 125
        err = r.stderr.decode()
        assert err.startswith("error: ") and "authentication failed" in err, err
        assert f"{KEYTAB_USER}@{REALM}" in err, err
        assert "keytab" in err, err

    def test_wrong_password_is_refused(self, kdc, krb_host, example):
        r = run_example(kdc, krb_host.endpoint, example, ["hostname"],
                        user=f"{KRB_USER}@{REALM}", password="not the password")
        assert r.returncode == 125
        err = r.stderr.decode()
        assert "authentication failed" in err, err
        assert "not the password" not in err

    def test_unknown_spn_names_the_spn(self, kdc, krb_host, example):
        spn = f"HTTP/nosuch.aetherv.test@{REALM}"
        r = run_example(kdc, krb_host.endpoint, example, ["hostname"], keytab=kdc.user_keytab,
                        extra=["--spn", spn])
        assert r.returncode == 125
        err = r.stderr.decode()
        assert spn in err, err
        assert "not found in Kerberos database" in err, err

    def test_ip_address_host_is_a_configuration_error(self, kdc, krb_host, example):
        r = run_example(kdc, krb_host.ip_endpoint, example, ["hostname"], keytab=kdc.user_keytab)
        assert r.returncode == 125
        err = r.stderr.decode()
        assert "IP address 127.0.0.1" in err, err

    def test_empty_ticket_cache_is_a_clear_error(self, kdc, krb_host, example):
        r = run_example(kdc, krb_host.endpoint, example, ["hostname"],
                        env_extra={"KRB5CCNAME": f"FILE:{kdc.dir}/empty-ccache"})
        assert r.returncode == 125
        err = r.stderr.decode()
        assert "no credentials for the default principal" in err, err

    def test_clock_skew_is_a_clear_error(self, kdc, krb_host, example):
        # The client's clock 10 minutes ahead of the KDC's (libfaketime): beyond the 5-minute
        # tolerance, the KDC refuses the pre-authenticated ticket request (MIT's clients would
        # otherwise adopt the KDC's time, kdc_timesync; the strict krb5.conf turns that off).
        faketime = shutil.which("faketime")
        assert faketime, "faketime is required (scripts/test installs it)"
        args = [faketime, "-f", "+10m", example, "--endpoint", krb_host.endpoint,
                "--auth", "kerberos", "--keytab", kdc.user_keytab,
                "--user", f"{KEYTAB_USER}@{REALM}", "--", "hostname"]
        env = example_env(kdc, KRB5_CONFIG=kdc.krb5_conf_strict)
        r = subprocess.run(args, env=env, capture_output=True, timeout=TIMEOUT)
        assert r.returncode == 125, r.stderr
        err = r.stderr.decode()
        assert "Clock skew too great" in err, err
        assert "5 minutes" in err, err

    def test_private_krb5_conf_from_realm_and_kdc(self, kdc, krb_host, example):
        env_extra = {"KRB5_CONFIG": "/nonexistent/krb5.conf"}
        r = run_example(kdc, krb_host.endpoint, example, ["echo", "override"],
                        keytab=kdc.user_keytab, env_extra=env_extra,
                        extra=["--realm", REALM, "--kdc", f"127.0.0.1:{kdc.port}"])
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"override\r\n"


def pywinrm_session(endpoint):
    import winrm
    return winrm.Session(
        endpoint, auth=(f"{KRB_USER}@{REALM}", ""), transport="kerberos",
        message_encryption="always",
    )


class TestPywinrmKerberos:
    def test_cmd_stdout_and_exit_codes(self, krb_host, ccache):
        s = pywinrm_session(krb_host.endpoint)
        r = s.run_cmd("echo", ["hello", "from", "cmd"])
        assert r.status_code == 0
        assert r.std_out == b"hello from cmd\r\n"
        r = s.run_cmd("exit /b 7")
        assert r.status_code == 7
        r = s.run_cmd("hostname")
        assert r.std_out.decode().strip().lower() == krb_host.name.lower()

    def test_ps_stdout_stderr_exit(self, krb_host, ccache):
        s = pywinrm_session(krb_host.endpoint)
        r = s.run_ps(f"Write-Output '{NON_ASCII}'")
        assert r.status_code == 0
        assert r.std_out.decode("utf-8") == NON_ASCII + "\r\n"
        r = s.run_ps("Write-Output 'before'; Write-Error 'it failed'")
        assert r.std_out.decode() == "before\r\n"
        assert b"it failed" in r.std_err
        assert r.status_code == 1

    def test_stdin(self, krb_host, ccache):
        import winrm
        p = winrm.Protocol(
            krb_host.endpoint, transport="kerberos", username=f"{KRB_USER}@{REALM}",
            message_encryption="always",
        )
        shell = p.open_shell(codepage=65001)
        try:
            encoded = base64.b64encode("$input".encode("utf-16-le")).decode()
            cmd = p.run_command(shell, f"powershell -encodedcommand {encoded}")
            p.send_command_input(shell, cmd, f"line one\r\n{NON_ASCII}\r\n".encode(), end=True)
            out, err, code = p.get_command_output(shell, cmd)
            p.cleanup_command(shell, cmd)
        finally:
            p.close_shell(shell)
        assert code == 0, err
        assert out.decode("utf-8") == f"line one\r\n{NON_ASCII}\r\n"

    def test_large_output(self, krb_host, ccache):
        r = pywinrm_session(krb_host.endpoint).run_ps(f"Write-Output ('x' * {BIG})")
        assert r.status_code == 0
        assert r.std_out == b"x" * BIG + b"\r\n"

    def test_wrong_service_key_is_refused(self, kdc, krb_host, ccache):
        # A ticket for a service principal whose key the host does not have.
        import winrm
        from winrm.exceptions import InvalidCredentialsError
        kdc.kadmin(f"addprinc -randkey HTTP/other.aetherv.test@{REALM}")
        s = winrm.Session(
            krb_host.endpoint, auth=(f"{KRB_USER}@{REALM}", ""), transport="kerberos",
            message_encryption="always", kerberos_hostname_override="other.aetherv.test",
        )
        with pytest.raises(InvalidCredentialsError):
            s.run_cmd("hostname")


@pytest.fixture(scope="module")
def pyspnego_listener(kdc):
    env = example_env(kdc, KRB5_KTNAME=f"FILE:{kdc.service_keytab}")
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [sys.executable, os.path.join(here, "krb_listener.py")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("port="):
        proc.kill()
        raise RuntimeError(f"listener did not start: {line}{proc.stderr.read()}")
    port = int(line.split("=", 1)[1])
    yield f"http://{SERVICE_HOST}:{port}/wsman", proc
    proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


class TestOurClientAgainstPyspnego:
    @pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
    def test_command_round_trips_encrypted(self, kdc, pyspnego_listener, example, auth):
        endpoint, _ = pyspnego_listener
        r = run_example(kdc, endpoint, example, ["echo", NON_ASCII], auth=auth,
                        keytab=kdc.user_keytab)
        assert r.returncode == 0, r.stderr
        # The listener echoes the command line it decrypted, and the exit code 0.
        assert r.stdout.decode("utf-8") == f"echo {NON_ASCII}\r\n"

    def test_stale_keytab_is_refused(self, kdc, pyspnego_listener, example):
        endpoint, _ = pyspnego_listener
        r = run_example(kdc, endpoint, example, ["hostname"], keytab=kdc.stale_keytab)
        assert r.returncode == 125
        assert "keytab" in r.stderr.decode()


# --- TLS channel bindings (GSSAPI) over HTTPS --------------------------------------------


@pytest.fixture(scope="module")
def strict_krb_host(kdc):
    """HTTPS, Kerberos, and channel bindings required (CbtHardeningLevel=Strict)."""
    host = KrbHost(kdc, extra=["--tls", "--require-channel-bindings"])
    assert host.endpoint.startswith(f"https://{SERVICE_HOST}:")
    yield host
    host.stop()


class TestChannelBindingsKerberos:
    @pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
    def test_our_client_passes_strict(self, kdc, strict_krb_host, example, auth):
        r = run_example(kdc, strict_krb_host.endpoint, example, ["echo", "bound"], auth=auth,
                        keytab=kdc.user_keytab, extra=["--insecure"])
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"bound\r\n"

    def test_pywinrm_with_channel_bindings_passes_strict(self, strict_krb_host, ccache):
        import winrm
        s = winrm.Session(
            strict_krb_host.endpoint, auth=(f"{KRB_USER}@{REALM}", ""), transport="kerberos",
            server_cert_validation="ignore",
        )
        r = s.run_cmd("echo", ["pykerberos", "cbt"])
        assert r.status_code == 0
        assert r.std_out == b"pykerberos cbt\r\n"

    def test_pywinrm_without_channel_bindings_is_refused(self, strict_krb_host, ccache):
        import winrm
        from winrm.exceptions import InvalidCredentialsError
        s = winrm.Session(
            strict_krb_host.endpoint, auth=(f"{KRB_USER}@{REALM}", ""), transport="kerberos",
            server_cert_validation="ignore", send_cbt=False,
        )
        with pytest.raises(InvalidCredentialsError):
            s.run_cmd("hostname")


# --- Expiry and renewal ------------------------------------------------------------------


SERVICE_LIFE = 8


@pytest.fixture(scope="module")
def expiring(kdc):
    """A host whose service tickets live SERVICE_LIFE seconds (so does every context with it),
    and a user whose TGT lives 2 minutes (less than the client's 5-minute renewal margin)."""
    spn = f"HTTP/expiring.aetherv.test@{REALM}"
    kdc.kadmin(f'addprinc -randkey -maxlife "{SERVICE_LIFE} seconds" {spn}')
    kdc.kadmin(f'addprinc -pw {USER_PASSWORD} -maxlife "2 minutes" winrm-short@{REALM}')
    keytab = kdc.keytab("expiring.keytab", spn)
    host = KrbHost(kdc, keytab=keytab)
    yield host, spn
    host.stop()


class TestTicketExpiry:
    """Real short lifetimes from the KDC (kadmin -maxlife), no clock tricks."""

    INTERVAL = SERVICE_LIFE + 3

    def as_requests(self, kdc, principal):
        with open(os.path.join(kdc.dir, "kdc.log")) as f:
            return sum(1 for line in f if "AS_REQ" in line and "ISSUE" in line
                       and f"{principal} for krbtgt" in line)

    def test_an_expired_context_reauthenticates_once_and_the_ticket_is_renewed(
            self, kdc, expiring, example):
        host, spn = expiring
        principal = f"winrm-short@{REALM}"
        before = self.as_requests(kdc, principal)
        r = run_example(kdc, host.endpoint, example, ["echo", "still", "here"],
                        user=principal, password=USER_PASSWORD,
                        extra=["--spn", spn, "--repeat", "3", "--interval", str(self.INTERVAL)],
                        env_extra={"AETHERV_LOG": "aetherv_winrm=debug"})
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"still here\r\n" * 3
        err = r.stderr.decode()
        # Each run after a pause finds the context expired and authenticates again, once.
        assert err.count("Kerberos context expired; re-authenticating") == 2, err
        summary = next(l for l in err.splitlines() if l.startswith("commands="))
        fields = dict(part.split("=", 1) for part in summary.split())
        assert fields["handshakes"] == "3", err
        # The TGT (2 minutes) is always within the renewal margin: each handshake got a fresh
        # one from the KDC before it could expire.
        assert self.as_requests(kdc, principal) - before == 3

    def test_a_long_lived_ticket_is_not_renewed(self, kdc, expiring, example):
        host, spn = expiring
        principal = f"{KRB_USER}@{REALM}"
        before = self.as_requests(kdc, principal)
        r = run_example(kdc, host.endpoint, example, ["echo", "once"],
                        user=principal, password=USER_PASSWORD,
                        extra=["--spn", spn, "--repeat", "2", "--interval", str(self.INTERVAL)])
        assert r.returncode == 0, r.stderr
        fields = dict(part.split("=", 1) for part in r.stderr.decode().split()[-4:])
        assert fields["handshakes"] == "2", r.stderr
        # Two handshakes (the context expired), one TGT: it had hours left.
        assert self.as_requests(kdc, principal) - before == 1


# --- Negotiate's NTLM fallback -----------------------------------------------------------


@pytest.fixture(scope="module")
def both(kdc):
    """A principal that is also the hosts' NTLM user, with the same password."""
    principal = f"{USER}@{REALM}"
    kdc.kadmin(f"addprinc -pw {PASSWORD} {principal}")
    return principal


class TestNegotiateFallback:
    UNKNOWN_SPN = f"HTTP/no-such-host.aetherv.test@{REALM}"

    def test_falls_back_to_ntlm_only_when_allowed(self, kdc, krb_host, example, both):
        # Kerberos cannot start: the KDC knows no such service. With the fallback allowed, the
        # connection authenticates with NTLM (the host knows the user and password).
        common = dict(auth="negotiate", user=both, password=PASSWORD,
                      env_extra={"AETHERV_LOG": "aetherv_winrm=warn"})
        r = run_example(kdc, krb_host.endpoint, example, ["echo", "via", "ntlm"],
                        extra=["--spn", self.UNKNOWN_SPN, "--ntlm-fallback"], **common)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"via ntlm\r\n"
        assert "using NTLM as allowed" in r.stderr.decode(), r.stderr
        # Not allowed: the Kerberos error, naming the SPN.
        r = run_example(kdc, krb_host.endpoint, example, ["echo", "via", "ntlm"],
                        extra=["--spn", self.UNKNOWN_SPN], **common)
        assert r.returncode == 125
        assert self.UNKNOWN_SPN in r.stderr.decode(), r.stderr

    def test_kerberos_that_works_is_used(self, kdc, krb_host, example, both):
        r = run_example(kdc, krb_host.endpoint, example, ["echo", "kerberos"],
                        auth="negotiate", user=both, password=PASSWORD,
                        extra=["--ntlm-fallback"], env_extra={"AETHERV_LOG": "aetherv_winrm=debug"})
        assert r.returncode == 0, r.stderr
        err = r.stderr.decode()
        assert "Kerberos handshake" in err and "using NTLM" not in err, err

    def test_a_refused_kerberos_token_is_not_retried_with_ntlm(self, kdc, example, both):
        # The host has no key for the ticket's service (another SPN): it refuses the token.
        # NTLM would have worked (same user and password), but the client does not downgrade.
        kdc.kadmin(f"addprinc -randkey HTTP/elsewhere.aetherv.test@{REALM}")
        host = KrbHost(kdc)
        try:
            r = run_example(kdc, host.endpoint, example, ["hostname"], auth="negotiate",
                            user=both, password=PASSWORD,
                            extra=["--spn", f"HTTP/elsewhere.aetherv.test@{REALM}",
                                   "--ntlm-fallback"])
        finally:
            host.stop()
        assert r.returncode == 125
        assert "authentication failed" in r.stderr.decode(), r.stderr

    def test_the_fallback_needs_negotiate(self, kdc, krb_host, example, both):
        r = run_example(kdc, krb_host.endpoint, example, ["hostname"], auth="kerberos",
                        user=both, password=PASSWORD, extra=["--ntlm-fallback"])
        assert r.returncode == 125
        assert "--ntlm-fallback needs --auth negotiate" in r.stderr.decode()
