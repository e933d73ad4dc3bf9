"""Fixtures for the interop tests: simulated hosts started from the aetherv-hostsim binary.

The binaries are built by scripts/test and passed in through AETHERV_HOSTSIM and
AETHERV_WINRM_EXAMPLE. Every process is bounded in time and killed at the end.
"""

import os
import subprocess
import time

import pytest

USER = "aetherv"
# ASCII: requests encodes Basic credentials as latin-1 (non-ASCII NTLM passwords are covered
# by the pyspnego interop test).
PASSWORD = "Passw0rd-aetherv!"
STARTUP_TIMEOUT = 60


def _binary(var: str) -> str:
    path = os.environ.get(var)
    if not path or not os.path.exists(path):
        pytest.fail(f"{var} must name a built binary (scripts/test sets it); got {path!r}")
    return path


class SimHost:
    """One running aetherv-hostsim process serving one host."""

    def __init__(self, tls: bool, extra=()):
        env = dict(os.environ, SIM_PASSWORD=PASSWORD)
        args = [
            _binary("AETHERV_HOSTSIM"),
            "--hosts", "1", "--vms-per-host", "2", "--listen", "127.0.0.1:0",
            "--user", USER, "--password-env", "SIM_PASSWORD", "--seed", "7",
        ]
        if tls:
            args.append("--tls")
        args += list(extra)
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
        self.endpoint = fields["endpoint"]

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture(scope="module")
def http_host():
    host = SimHost(tls=False)
    assert host.endpoint.startswith("http://127.0.0.1:")
    yield host
    host.stop()


@pytest.fixture(scope="module")
def https_host():
    host = SimHost(tls=True)
    assert host.endpoint.startswith("https://127.0.0.1:")
    yield host
    host.stop()


@pytest.fixture(scope="session")
def example():
    return _binary("AETHERV_WINRM_EXAMPLE")
