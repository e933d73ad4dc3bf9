#!/usr/bin/env python3
"""Server benchmark: start-to-ready, memory and REST throughput of aetherv-server in demo mode.

Builds the release server, the `loadgen` load generator and the standalone simulator, then:

1. start-to-ready with the default demo fleet (5 hosts, 40 VMs): the time from spawning the
   server to the first 200 of GET /readyz (polled every 10 ms), median of --ready-runs runs;
2. a 10,000-VM fleet (DEMO_HOSTS=50 DEMO_VMS_PER_HOST=200 DEMO_CLUSTERS=5): resident memory
   (VmRSS, VmHWM) after ready and after the load; because the simulated fleet lives in the
   server's process in demo mode, also the memory of a server with the same 50 hosts and no
   VMs, and of the standalone simulator (aetherv-hostsim) with 50 x 200 and 50 x 0 VMs;
3. load with --connections keep-alive connections: GET /api/v1/vms (full list) and
   GET /api/v1/vms/{id} rotating over 1,000 ids taken from the list.

Prints a table with the targets and PASS/MISS per target. The targets are informational: the
script exits 0 unless something failed. Usage (from the repository root):

    python3 benches/server_load.py [--seconds 10] [--connections 64] [--no-build]
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target/release/aetherv-server")
LOADGEN = os.path.join(ROOT, "target/release/loadgen")
HOSTSIM = os.path.join(ROOT, "target/release/aetherv-hostsim")

TARGET_READY_S = 2.0
TARGET_LIST_P99_MS = 50.0
TARGET_ONE_RPS = 10_000.0
TARGET_MEMORY_MB = 150.0

# Variables that would switch the server out of the demo configuration measured here.
CLEARED = ("HYPERV_HOSTS", "HOSTS_FILE", "OIDC_ISSUER_URL", "AUTH_ENABLED", "ALLOW_DEV_AUTH",
           "PUBLIC_URL", "DEMO_HOSTS", "DEMO_VMS_PER_HOST", "DEMO_CLUSTERS")


class Failure(Exception):
    """Something the benchmark could not do (as opposed to a missed target)."""


def build():
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "aetherv-server", "-p", "aetherv-benches",
         "--bin", "aetherv-server", "--bin", "loadgen"], cwd=ROOT, check=True)
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "aetherv-sim",
         "--bin", "aetherv-hostsim"], cwd=ROOT, check=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid):
    """VmRSS and VmHWM of a process, in MB (10^6 bytes)."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024 / 1e6  # kB
    return values["VmRSS"], values["VmHWM"]


def get(port, path, timeout=5.0):
    """GET on the server; returns (status, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class Server:
    """One aetherv-server process in demo mode; stop() always terminates it."""

    def __init__(self, hosts=None, vms_per_host=None, clusters=None):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(LISTEN_ADDR=f"127.0.0.1:{self.port}", LOG_LEVEL="warn")
        if hosts is not None:
            env["DEMO_HOSTS"] = str(hosts)
        if vms_per_host is not None:
            env["DEMO_VMS_PER_HOST"] = str(vms_per_host)
        if clusters is not None:
            env["DEMO_CLUSTERS"] = str(clusters)
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.spawned = time.perf_counter()
        self.proc = subprocess.Popen([SERVER], env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)

    def wait_ready(self, limit_s):
        """Polls /readyz every 10 ms; returns the seconds from spawn to the first 200."""
        deadline = self.spawned + limit_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"the server exited with {self.proc.returncode}: {self.log()}")
            try:
                status, _ = get(self.port, "/readyz", timeout=1.0)
                if status == 200:
                    return time.perf_counter() - self.spawned
            except OSError:
                pass  # not listening yet
            time.sleep(0.01)
        raise Failure(f"the server was not ready after {limit_s} s: {self.log()}")

    def json(self, path, timeout=30.0):
        status, body = get(self.port, path, timeout)
        if status != 200:
            raise Failure(f"GET {path}: status {status}: {body[:200]!r}")
        return json.loads(body)

    def memory(self):
        return memory_mb(self.proc.pid)

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read()[-2000:]

    def stop(self):
        if self.stderr.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def hostsim_memory(hosts, vms_per_host, clusters):
    """VmRSS/VmHWM of the standalone simulator serving the same fleet, once all hosts listen."""
    env = dict(os.environ, AETHERV_BENCH_SIM_PASSWORD="bench-Pa55")
    proc = subprocess.Popen(
        [HOSTSIM, "--hosts", str(hosts), "--vms-per-host", str(vms_per_host), "--clusters",
         str(clusters), "--listen", "127.0.0.1:0", "--user", "Administrator",
         "--password-env", "AETHERV_BENCH_SIM_PASSWORD"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for _ in range(hosts):
            if not proc.stdout.readline().startswith("host="):
                raise Failure("aetherv-hostsim did not start")
        return memory_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def loadgen(urls, connections, seconds, warmup, headers=()):
    args = [LOADGEN, "--connections", str(connections), "--duration-secs", str(seconds),
            "--warmup-secs", str(warmup)]
    for header in headers:
        args += ["--header", header]
    for url in urls:
        args += ["--url", url]
    r = subprocess.run(args, capture_output=True, text=True, timeout=seconds + warmup + 120)
    if r.returncode != 0:
        raise Failure(f"loadgen failed ({r.returncode}): {r.stderr.strip()}")
    result = json.loads(r.stdout)
    if result["requests"] == 0 or result["errors"] or result["non_2xx"]:
        raise Failure(f"loadgen saw failures: {result}")
    return result


def verdict(ok):
    return "PASS" if ok else "MISS"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per load")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--ready-runs", type=int, default=5)
    parser.add_argument("--ids", type=int, default=1000, help="VM ids the one-VM load rotates over")
    parser.add_argument("--ready-limit", type=float, default=120.0,
                        help="seconds the 10,000-VM server may take to become ready")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build()
    print(f"machine: {os.cpu_count()} CPUs (loadgen and server share them); "
          f"{args.connections} connections, {args.seconds:g} s measured after "
          f"{args.warmup:g} s warm-up", flush=True)

    servers = []

    def start(**kw):
        s = Server(**kw)
        servers.append(s)
        return s

    try:
        # 1. Start-to-ready with the default demo fleet.
        times = []
        for _ in range(args.ready_runs):
            s = start()
            times.append(s.wait_ready(30.0))
            status = s.json("/api/v1/status")
            s.stop()
        ready_s = statistics.median(times)
        print(f"start-to-ready (default fleet: {status['hosts']} hosts, {status['vms']} VMs): "
              f"median {ready_s:.3f} s of {', '.join(f'{t:.3f}' for t in times)}", flush=True)

        # 2. Baseline: same 50 hosts without VMs, and the standalone simulator.
        s = start(hosts=50, vms_per_host=0, clusters=5)
        empty_ready = s.wait_ready(args.ready_limit)
        time.sleep(1.0)
        empty_rss, empty_hwm = s.memory()
        s.stop()
        sim_rss, sim_hwm = hostsim_memory(50, 200, 5)
        sim0_rss, _ = hostsim_memory(50, 0, 5)
        print(f"50 hosts, 0 VMs: ready in {empty_ready:.2f} s, VmRSS {empty_rss:.1f} MB, "
              f"VmHWM {empty_hwm:.1f} MB", flush=True)

        # 3. The 10,000-VM fleet.
        s = start(hosts=50, vms_per_host=200, clusters=5)
        big_ready = s.wait_ready(args.ready_limit)
        status = s.json("/api/v1/status")
        if status.get("vms") != 10_000:
            raise Failure(f"/api/v1/status reports {status.get('vms')} VMs, expected 10000")
        time.sleep(1.0)
        ready_rss, ready_hwm = s.memory()
        # The unfiltered list is serialised on the first request after an inventory change and
        # served from the cache afterwards: time one cold and one warm request.
        single_ms = []
        for _ in range(2):
            t = time.perf_counter()
            status_code, body = get(s.port, "/api/v1/vms?limit=all", timeout=30.0)
            single_ms.append((time.perf_counter() - t) * 1000)
            if status_code != 200:
                raise Failure(f"GET /api/v1/vms: status {status_code}")
        vms = json.loads(body)["vms"]
        step = max(1, len(vms) // args.ids)
        ids = [vm["id"] for vm in vms[::step]][:args.ids]
        print(f"50 hosts, 10,000 VMs: ready in {big_ready:.2f} s, VmRSS {ready_rss:.1f} MB, "
              f"VmHWM {ready_hwm:.1f} MB; one GET /api/v1/vms: {single_ms[0]:.1f} ms first, "
              f"{single_ms[1]:.1f} ms next, {len(body)} bytes", flush=True)

        base = f"http://127.0.0.1:{s.port}"
        full = loadgen([f"{base}/api/v1/vms?limit=all"], args.connections, args.seconds, args.warmup)
        print(f"GET /api/v1/vms: {json.dumps(full)}", flush=True)
        full_gz = loadgen([f"{base}/api/v1/vms?limit=all"], args.connections, args.seconds, args.warmup,
                          headers=["Accept-Encoding: gzip"])
        print(f"GET /api/v1/vms (gzip): {json.dumps(full_gz)}", flush=True)
        one = loadgen([f"{base}/api/v1/vms/{i}" for i in ids], args.connections, args.seconds,
                      args.warmup)
        print(f"GET /api/v1/vms/{{id}} over {len(ids)} ids: {json.dumps(one)}", flush=True)
        load_rss, load_hwm = s.memory()
        s.stop()
    finally:
        for srv in servers:
            srv.stop()

    server_share = load_hwm - (sim_rss - sim0_rss)
    print()
    print("Memory (MB)                                 VmRSS    VmHWM")
    rows = [
        ("server, 10,000 VMs, after ready", ready_rss, ready_hwm),
        ("server, 10,000 VMs, after load", load_rss, load_hwm),
        ("server, 50 hosts, 0 VMs", empty_rss, empty_hwm),
        ("aetherv-hostsim alone, 50 x 200 VMs", sim_rss, sim_hwm),
    ]
    for name, rss, hwm in rows:
        print(f"  {name:<40} {rss:>7.1f}  {hwm:>7.1f}")
    print(f"  aetherv-hostsim alone, 50 x 0 VMs        {sim0_rss:>7.1f}")
    print("  In demo mode the simulated fleet runs inside the server process: the 10,000-VM")
    print(f"  figures include the simulator (alone it holds ~{sim_rss - sim0_rss:.1f} MB for the")
    print(f"  VMs). Server share estimate: {server_share:.1f} MB peak "
          "(server HWM after load minus the simulator's VM share).")
    print()
    print(f"{'measure':<34} {'value':>12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'target':>14}  result")
    table = [
        ("start-to-ready (5 hosts, 40 VMs)", f"{ready_s:.3f} s", "", "", "",
         f"<= {TARGET_READY_S:g} s", ready_s <= TARGET_READY_S),
        ("GET /api/v1/vms (10,000 VMs)", f"{full['bytes_per_response'] / 1e6:.2f} MB",
         f"{full['rps']:.0f}", f"{full['p50_ms']:.2f}", f"{full['p99_ms']:.2f}",
         f"p99 <= {TARGET_LIST_P99_MS:g} ms", full["p99_ms"] <= TARGET_LIST_P99_MS),
        ("GET /api/v1/vms, Accept-Encoding: gzip", f"{full_gz['bytes_per_response'] / 1e6:.2f} MB",
         f"{full_gz['rps']:.0f}", f"{full_gz['p50_ms']:.2f}", f"{full_gz['p99_ms']:.2f}",
         f"p99 <= {TARGET_LIST_P99_MS:g} ms", full_gz["p99_ms"] <= TARGET_LIST_P99_MS),
        ("GET /api/v1/vms/{id} (1,000 ids)", f"{one['bytes_per_response']:.0f} B",
         f"{one['rps']:.0f}", f"{one['p50_ms']:.2f}", f"{one['p99_ms']:.2f}",
         f">= {TARGET_ONE_RPS:,.0f}/s", one["rps"] >= TARGET_ONE_RPS),
        ("memory, 10,000 VMs (VmHWM)", f"{load_hwm:.1f} MB", "", "", "",
         f"<= {TARGET_MEMORY_MB:g} MB", load_hwm <= TARGET_MEMORY_MB),
        ("  without the simulator (est.)", f"{server_share:.1f} MB", "", "", "",
         f"<= {TARGET_MEMORY_MB:g} MB", server_share <= TARGET_MEMORY_MB),
    ]
    for name, value, rps, p50, p99, target, ok in table:
        print(f"{name:<34} {value:>12} {rps:>9} {p50:>8} {p99:>8} {target:>14}  {verdict(ok)}")
    print("Targets are informational; memory includes the in-process simulator (see above).")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
