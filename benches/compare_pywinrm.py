#!/usr/bin/env python3
"""Peer comparison: 200 PowerShell commands with our example CLI vs pywinrm.

Starts a fresh aetherv-hostsim (release build) for each client so that the server's request
counters belong to one client, runs the commands, and prints requests per command, handshakes
and the time ratio. Usage (from the repository root, after scripts/test created .venv):

    .venv/bin/python benches/compare_pywinrm.py [--commands 200]
"""

import argparse
import os
import re
import subprocess
import sys
import time

USER = "aetherv"
PASSWORD = "bench-Pa55"
SCRIPT = "Write-Output 'ok'"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTSIM = os.path.join(ROOT, "target/release/aetherv-hostsim")
EXAMPLE = os.path.join(ROOT, "target/release/examples/winrm")


def build():
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "aetherv-sim",
         "--bin", "aetherv-hostsim"], cwd=ROOT, check=True)
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "aetherv-examples", "--example", "winrm"],
        cwd=ROOT, check=True)


class Host:
    def __init__(self):
        env = dict(os.environ, SIM_PASSWORD=PASSWORD)
        self.proc = subprocess.Popen(
            [HOSTSIM, "--hosts", "1", "--vms-per-host", "4", "--listen", "127.0.0.1:0",
             "--user", USER, "--password-env", "SIM_PASSWORD"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("host="):
            raise SystemExit(f"hostsim did not start: {line!r} {self.proc.stderr.read()}")
        self.endpoint = dict(p.split("=", 1) for p in line.split())["endpoint"]

    def stop(self):
        """Stops the host and returns its counters (printed on shutdown)."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        m = re.search(r"requests=(\d+).*?handshakes=(\d+)", err)
        if not m:
            raise SystemExit(f"no counters in hostsim output: {err!r}")
        return int(m.group(1)), int(m.group(2))


def run_ours(n):
    host = Host()
    env = dict(os.environ, SIM_PASSWORD=PASSWORD)
    start = time.perf_counter()
    r = subprocess.run(
        [EXAMPLE, "--endpoint", host.endpoint, "--auth", "ntlm", "--user", USER,
         "--password-env", "SIM_PASSWORD", "--powershell", "--repeat", str(n), "--", SCRIPT],
        env=env, capture_output=True, timeout=600)
    seconds = time.perf_counter() - start
    if r.returncode != 0 or r.stdout != b"ok\r\n" * n:
        raise SystemExit(f"example failed: {r.returncode} {r.stderr!r}")
    requests, handshakes = host.stop()
    return seconds, requests, handshakes


def run_pywinrm(n):
    import winrm

    host = Host()
    start = time.perf_counter()
    session = winrm.Session(host.endpoint, auth=(USER, PASSWORD), transport="ntlm",
                            message_encryption="always")
    for _ in range(n):
        r = session.run_ps(SCRIPT)
        if r.status_code != 0 or r.std_out != b"ok\r\n":
            raise SystemExit(f"pywinrm failed: {r.status_code} {r.std_err!r}")
    seconds = time.perf_counter() - start
    requests, handshakes = host.stop()
    return seconds, requests, handshakes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build()
    n = args.commands
    ours = run_ours(n)
    theirs = run_pywinrm(n)
    print(f"{'client':<10} {'seconds':>8} {'cmd/s':>8} {'requests/cmd':>13} {'handshakes':>10}")
    for name, (sec, req, hs) in (("aetherv", ours), ("pywinrm", theirs)):
        print(f"{name:<10} {sec:>8.3f} {n / sec:>8.1f} {req / n:>13.2f} {hs:>10}")
    print(f"speedup (pywinrm time / aetherv time): {theirs[0] / ours[0]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
