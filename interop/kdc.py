"""A real MIT KDC for the Kerberos interop tests, in a temporary directory on loopback.

The realm is created with kdb5_util, principals and keytabs with kadmin.local, and krb5kdc
runs in the foreground on a free port with a generated krb5.conf. Every command is bounded in
time; stop() kills the KDC and removes the directory.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

REALM = "AETHERV.TEST"
# The service principal of the simulated hosts: clients reach them as http://localhost:PORT.
SERVICE_HOST = "localhost"
SPN = f"HTTP/{SERVICE_HOST}@{REALM}"
USER = "winrm-user"
USER_PASSWORD = "Kerb-Passw0rd-aetherv!"
KEYTAB_USER = "winrm-svc"
COMMAND_TIMEOUT = 60
SBIN = "/usr/sbin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    for candidate in (shutil.which(name), os.path.join(SBIN, name)):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError(f"{name} not found: install krb5-kdc and krb5-admin-server")


class Kdc:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="aetherv-kdc-")
        self.port = _free_port()
        self.krb5_conf = os.path.join(self.dir, "krb5.conf")
        self.kdc_conf = os.path.join(self.dir, "kdc.conf")
        with open(self.kdc_conf, "w") as f:
            f.write(
                f"[kdcdefaults]\n kdc_ports = {self.port}\n kdc_tcp_ports = {self.port}\n"
                f"[realms]\n {REALM} = {{\n"
                f"  database_name = {self.dir}/principal\n"
                f"  key_stash_file = {self.dir}/stash\n"
                f"  acl_file = {self.dir}/kadm5.acl\n"
                f"  max_life = 10h 0m 0s\n  max_renewable_life = 7d 0h 0m 0s\n"
                f"  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
                f" }}\n[logging]\n kdc = FILE:{self.dir}/kdc.log\n"
            )
        with open(self.krb5_conf, "w") as f:
            f.write(
                f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n"
                f" dns_lookup_realm = false\n dns_canonicalize_hostname = false\n rdns = false\n"
                f" forwardable = true\n udp_preference_limit = 1\n"
                f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{self.port}\n }}\n"
                f"[domain_realm]\n {SERVICE_HOST} = {REALM}\n"
            )
        # The same realm for a client that does not correct its clock from KDC replies
        # (kdc_timesync = 0): clock skew then surfaces as MIT's error instead of being absorbed.
        self.krb5_conf_strict = os.path.join(self.dir, "krb5-strict.conf")
        with open(self.krb5_conf) as src, open(self.krb5_conf_strict, "w") as dst:
            dst.write(src.read().replace("[libdefaults]\n", "[libdefaults]\n kdc_timesync = 0\n", 1))
        self.env = dict(
            os.environ,
            KRB5_CONFIG=self.krb5_conf,
            KRB5_KDC_PROFILE=self.kdc_conf,
            KRB5CCNAME=f"FILE:{self.dir}/unused-ccache",
        )
        self.proc = None
        try:
            self._run([_tool("kdb5_util"), "-r", REALM, "-P", "master-Passw0rd", "create", "-s"])
            self.kadmin(f"addprinc -randkey {SPN}")
            self.kadmin(f"addprinc -pw {USER_PASSWORD} {USER}@{REALM}")
            # Pre-authentication (as Active Directory requires): the KDC checks the client's clock.
            self.kadmin(f"addprinc -randkey +requires_preauth {KEYTAB_USER}@{REALM}")
            self.service_keytab = self.keytab("service.keytab", SPN)
            # A keytab exported twice: the first copy's keys are stale (kvno bumped).
            self.stale_keytab = self.keytab("stale.keytab", f"{KEYTAB_USER}@{REALM}")
            self.user_keytab = self.keytab("user.keytab", f"{KEYTAB_USER}@{REALM}")
            self.proc = subprocess.Popen(
                [_tool("krb5kdc"), "-n", "-P", os.path.join(self.dir, "kdc.pid")],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _run(self, args):
        result = subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def kadmin(self, query: str) -> str:
        return self._run([_tool("kadmin.local"), "-r", REALM, "-q", query])

    def keytab(self, name: str, principal: str) -> str:
        path = os.path.join(self.dir, name)
        self.kadmin(f"ktadd -k {path} {principal}")
        return path

    def _wait_listening(self):
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"krb5kdc exited: {self.proc.stderr.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("krb5kdc did not start listening")

    def kinit(self, ccache: str, principal: str = f"{USER}@{REALM}", password: str = USER_PASSWORD):
        """Gets a TGT for `principal` into `ccache` (FILE:...)."""
        env = dict(self.env, KRB5CCNAME=ccache)
        result = subprocess.run(
            [_tool("kinit"), principal],
            env=env,
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kinit failed: {result.stdout}{result.stderr}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
