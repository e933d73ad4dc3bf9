"""The whole server on Kerberos: a VM provisioned through the REST API with every host on
Kerberos, against a real MIT KDC (kdc.py), all on loopback.

- The realm has one service principal per host, `HTTP/hvNN.fleet.aetherv.test`, and each
  simulated host (an aetherv-hostsim process on its own loopback address, 127.0.0.N) holds
  only its own key (`--keytab` with that principal alone): a ticket for one host is refused
  by another.
- The server runs in fleet mode as in production: `HOSTS_FILE` names the hosts (by address,
  with `spn` per host, since the test machine has no DNS for them), `WINRM_TRANSPORT=kerberos`,
  the client keytab in `WINRM_KEYTAB_B64`, `WINRM_REALM` and `WINRM_KDC`. No WinRM password
  is given, so nothing can authenticate with NTLM.
- A VM is provisioned on one host through `POST /api/v1/vms/create` and its job followed to
  success; the inventory of every host was read over Kerberos.
- The hosts' counters (printed by aetherv-hostsim when it stops) give the figures, compared
  with the same run on NTLM: one handshake per connection on both, and the same requests per
  command once the handshake legs (one for Kerberos, two for NTLM) and shell creations are set
  aside (measured: 32 commands, 4.09 requests per command on both, the provisioning steps'
  Receive polls included; the CLI's at most 3 per command is checked in test_kerberos.py).
"""

import base64
import os
import subprocess
import time

import pytest
import requests

from conftest import PASSWORD, USER, _binary
from kdc import KEYTAB_USER, REALM, Kdc

HOSTS = 3
DOMAIN = "fleet.aetherv.test"
STARTUP_TIMEOUT = 90
JOB_TIMEOUT = 180
GUEST_PW = "Gu3st-pw-never-shown"


@pytest.fixture(scope="module")
def kdc():
    k = Kdc()
    yield k
    k.stop()


class FleetHost:
    """One aetherv-hostsim process serving one host on 127.0.0.N."""

    def __init__(self, index: int, env: dict, keytab=None):
        self.address = f"127.0.0.{index + 2}"
        self.spn = f"HTTP/hv{index + 1:02}.{DOMAIN}@{REALM}"
        args = [
            _binary("AETHERV_HOSTSIM"), "--hosts", "1", "--vms-per-host", "2",
            "--clusters", "0", "--listen", f"{self.address}:0", "--user", USER,
            "--password-env", "SIM_PASSWORD", "--seed", str(11 + index),
        ]
        if keytab:
            args += ["--keytab", keytab]
        self.proc = subprocess.Popen(
            args, env=dict(env, SIM_PASSWORD=PASSWORD), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
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
        self.port = int(fields["endpoint"].rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> dict:
        """Stops the host; returns its counters."""
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        line = next((l for l in err.splitlines() if l.startswith("host=")), None)
        assert line, f"no counters from the host: {err}"
        return {k: int(v) for k, v in (p.split("=", 1) for p in line.split()[1:])}


class Server:
    """The server binary; its output goes to a file (read for its URL, and at the end)."""

    def __init__(self, env: dict, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [_binary("AETHERV_SERVER")], env=env, stdout=self.log, stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        self.base = None
        while time.monotonic() < deadline and self.base is None:
            for line in self.output().splitlines():
                if "web UI " in line:
                    self.base = line.split("web UI ", 1)[1].split()[0].rstrip("/")
            if self.base is None:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        if self.base is None:
            raise RuntimeError("the server did not start:\n" + self.stop())
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/readyz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server never became ready:\n" + self.stop())

    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.output()


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WINRM_", "KRB5", "HYPERV_", "OIDC_", "DEMO_"))}
    env.pop("HOSTS_FILE", None)
    return env


def provision(base: str, host: str) -> dict:
    facts = requests.get(f"{base}/api/v1/hosts/{host}", timeout=30).json()
    image = next(i["name"] for i in facts["facts"]["images"]
                 if "ubuntu" in i["name"].lower())
    r = requests.post(f"{base}/api/v1/vms/create", timeout=30, json={
        "vm_name": "krb-vm-01", "hyperv_host": host, "image_name": image,
        "gb_ram": 2, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": GUEST_PW,
    })
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job = requests.get(f"{base}/api/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish: {job}")


def run_fleet(tmp_path, kdc, transport: str):
    """Starts the hosts and the server on `transport`, provisions a VM, stops everything;
    returns the job, the hosts' counters, the server's output and each host's detail."""
    env = base_env()
    krb_env = dict(env, KRB5_CONFIG=kdc.krb5_conf)
    hosts = []
    try:
        for i in range(HOSTS):
            keytab = None
            if transport == "kerberos":
                spn = f"HTTP/hv{i + 1:02}.{DOMAIN}@{REALM}"
                kdc.kadmin(f"addprinc -randkey {spn}")
                keytab = kdc.keytab(f"hv{i + 1:02}.keytab", spn)
            hosts.append(FleetHost(i, krb_env if keytab else env, keytab))
        lines = ["hosts:"]
        for h in hosts:
            lines += [f"  - name: {h.address}", f"    port: {h.port}"]
            if transport == "kerberos":
                lines.append(f"    spn: {h.spn}")
        hosts_file = tmp_path / f"hosts-{transport}.yaml"
        hosts_file.write_text("\n".join(lines) + "\n")
        server_env = dict(
            env, HOSTS_FILE=str(hosts_file), LISTEN_ADDR="127.0.0.1:0",
            SECRETS_DIR="/nonexistent-aetherv-test", AUTH_ENABLED="false",
            ALLOW_DEV_AUTH="true", LOG_LEVEL="info",
        )
        if transport == "kerberos":
            with open(kdc.user_keytab, "rb") as f:
                keytab_b64 = base64.b64encode(f.read()).decode()
            server_env.update(
                WINRM_TRANSPORT="kerberos", WINRM_USERNAME=f"{KEYTAB_USER}@{REALM}",
                WINRM_KEYTAB_B64=keytab_b64, WINRM_REALM=REALM,
                WINRM_KDC=f"127.0.0.1:{kdc.port}",
            )
        else:
            server_env.update(WINRM_TRANSPORT="ntlm", WINRM_USERNAME=USER,
                              WINRM_PASSWORD=PASSWORD)
        server = Server(server_env, tmp_path / f"server-{transport}.log")
        try:
            job = provision(server.base, hosts[0].address)
            listed = [requests.get(f"{server.base}/api/v1/hosts/{h.address}", timeout=30).json()
                      for h in hosts]
        finally:
            output = server.stop()
        counters = [h.stop() for h in hosts]
        hosts = []
        return job, counters, output, listed
    finally:
        for h in hosts:
            h.stop()


def figures(counters: list, legs: int) -> dict:
    total = {k: sum(c[k] for c in counters) for k in counters[0]}
    per_command = (total["requests"] - legs * total["handshakes"] - total["shells"]) / total["commands"]
    return dict(total, handshakes_per_connection=total["handshakes"] / total["connections"],
                requests_per_command=per_command)


@pytest.fixture(scope="module")
def ntlm_run(tmp_path_factory, kdc):
    return run_fleet(tmp_path_factory.mktemp("ntlm"), kdc, "ntlm")


@pytest.fixture(scope="module")
def kerberos_run(tmp_path_factory, kdc):
    return run_fleet(tmp_path_factory.mktemp("kerberos"), kdc, "kerberos")


def test_a_vm_is_provisioned_with_every_host_on_kerberos(kerberos_run):
    job, counters, output, listed = kerberos_run
    assert job["status"] == "succeeded", job
    # Every host was reached (inventory, script deployment) and authenticated with Kerberos
    # (no WinRM password was configured: NTLM was impossible).
    assert len(counters) == HOSTS
    for c in counters:
        assert c["handshakes"] >= 1 and c["commands"] >= 1, c
    for detail in listed:
        assert detail["status"] == "connected", detail
        assert detail["facts"] is not None, detail
    assert "krb-vm-01" in {vm["name"] for vm in listed[0]["vms"]}, listed[0]["vms"]
    assert GUEST_PW not in output


def test_kerberos_figures_match_ntlm(kerberos_run, ntlm_run):
    _, krb_counters, _, _ = kerberos_run
    ntlm_job, ntlm_counters, _, _ = ntlm_run
    assert ntlm_job["status"] == "succeeded", ntlm_job
    # Kerberos: one request per handshake (AP-REQ, answered by AP-REP); NTLM: two.
    krb = figures(krb_counters, legs=1)
    ntlm = figures(ntlm_counters, legs=2)
    print(f"\nkerberos: {krb}\nntlm:     {ntlm}")
    # At most one handshake per connection (a connection that never carried a request, such
    # as one closed idle, makes none), and the same number of handshakes on both transports.
    for f in (krb, ntlm):
        assert 1 <= f["handshakes"] <= f["connections"], f
    assert krb["handshakes"] == ntlm["handshakes"], (krb, ntlm)
    # The same work costs the same requests once the handshake legs are set aside. (The
    # server's commands include long-running provisioning steps whose output is polled with
    # several Receives, so the per-command figure here is above the CLI's <= 3, which
    # test_kerberos.py's --repeat test checks for Kerberos as test_pywinrm.py does for NTLM;
    # Receive polls depend on timing, hence the small tolerance.)
    assert krb["commands"] == ntlm["commands"], (krb, ntlm)
    assert abs(krb["requests_per_command"] - ntlm["requests_per_command"]) <= 0.25, (krb, ntlm)
