#!/usr/bin/env python3
"""Scale benchmark: aetherv-server in fleet mode against separate aetherv-hostsim processes.

For each fleet size (default 10,000, 50,000 and 100,000 VMs; 100 VMs per host, so 100, 500
and 1,000 hosts, with --latency-ms added to every WinRM request), it:

1. starts the simulated hosts as separate release `aetherv-hostsim` processes (--hosts-per-sim
   hosts each, one loopback address per host: 127.<10+k>.0.1, .2, ...; each process its own
   seed, so VM ids differ), and waits until every host listens;
2. starts the release server in fleet mode (HYPERV_HOSTS = those addresses, NTLM, no
   authentication) and measures the time from spawning it to the first 200 of GET /readyz;
   then stops it and starts it again over the same hosts, which now hold the deployed scripts
   and provisioning ISOs, and measures the time to ready again (the restart figure is the one
   compared with the target; the first start includes pushing every host its ISOs);
3. measures a steady-state refresh round: POST /api/v1/inventory/refresh (every host at
   once, as many at a time as the server's INVENTORY_REFRESH_CONCURRENCY), the time until it
   answers, and the CPU seconds (utime + stime from /proc) of the server and of the
   simulators for the round; twice, the second round is reported;
4. reports the server's VmRSS after the rounds;
5. measures with `wrk` (64 connections, --seconds after a short warm-up) the p50/p99 latency
   of GET /api/v1/vms?limit=100 rotating over the first pages of a cursor walk, and of
   GET /api/v1/vms/{id} rotating over 1,000 ids.

6. with --ui, runs benches/ui_scale.py (headless Chromium) against the same server: the UI
   figures at each fleet size (usable after navigation, sort and filter to paint, the longest
   main-thread stall while power actions stream events).

Prints one table per size and the issue's targets at the largest size. The targets are
informational: the script exits non-zero only when something failed. Every process it starts
is stopped at the end (SIGTERM), also on errors. Loopback only.

    python3 benches/scale.py                    # builds the release binaries first
    python3 benches/scale.py --no-build --sizes 10000 --seconds 5

Needs `wrk` (Debian package `wrk`; the script installs it with apt-get when it is missing and
it runs as root).
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target/release/aetherv-server")
HOSTSIM = os.path.join(ROOT, "target/release/aetherv-hostsim")
PASSWORD = "bench-Scale-Pa55"
USER = "Administrator"
WINRM_PORT = 5985

TARGETS = {  # at 100,000 VMs
    "ready_s": 10.0,
    "refresh_s": 2.0,
    "rss_mb": 300.0,
    "page_p99_ms": 20.0,
}

CLEARED = ("HYPERV_HOSTS", "HOSTS_FILE", "OIDC_ISSUER_URL", "PUBLIC_URL", "DEMO_HOSTS",
           "DEMO_VMS_PER_HOST", "DEMO_CLUSTERS", "WINRM_USE_TLS", "WINRM_TRANSPORT")


class Failure(Exception):
    """Something the benchmark could not do (as opposed to a missed target)."""


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "aetherv-server",
                    "--bin", "aetherv-server"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "aetherv-sim",
                    "--bin", "aetherv-hostsim"], cwd=ROOT, check=True)


def ensure_wrk():
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise Failure("wrk is not installed (Debian package wrk)")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        raise Failure("wrk could not be installed")


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stat(pid):
    """(VmRSS in MB, CPU seconds utime+stime) of a process."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024 / 1e6
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return rss, cpu


def request(port, method, path, timeout=60.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class Processes:
    """Every process the benchmark started; stop_all() terminates them."""

    def __init__(self):
        self.procs = []

    def spawn(self, args, env, **kw):
        p = subprocess.Popen(args, env=env, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        """Stops one process started here (SIGTERM, then SIGKILL after 30 s)."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.remove(p)

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def start_sims(procs, hosts, vms_per_host, hosts_per_sim, latency_ms):
    """Starts the simulators; returns the host addresses once all listen, and the
    simulators' process ids."""
    env = dict(os.environ, AETHERV_BENCH_SIM_PASSWORD=PASSWORD, RUST_LOG="error")
    started = []
    for k, first in enumerate(range(0, hosts, hosts_per_sim)):
        count = min(hosts_per_sim, hosts - first)
        args = [HOSTSIM, "--hosts", str(count), "--vms-per-host", str(vms_per_host),
                "--clusters", "0", "--listen", f"127.{10 + k}.0.1:{WINRM_PORT}", "--ip-per-host",
                "--user", USER, "--password-env", "AETHERV_BENCH_SIM_PASSWORD",
                "--seed", str(k + 1)]
        if latency_ms:
            args += ["--latency-ms", str(latency_ms)]
        p = procs.spawn(args, env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started.append((p, count))
    addresses = []
    for p, count in started:
        for _ in range(count):
            line = p.stdout.readline()
            m = re.search(r"endpoint=https?://([0-9.]+):", line)
            if not m:
                raise Failure(f"aetherv-hostsim did not start (got {line!r})")
            addresses.append(m.group(1))
    return addresses, [p.pid for p, _ in started]


def start_server(procs, addresses, refresh_interval):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(LISTEN_ADDR=f"127.0.0.1:{port}", LOG_LEVEL="warn",
               HYPERV_HOSTS=",".join(addresses), WINRM_PORT=str(WINRM_PORT),
               WINRM_USERNAME=USER, WINRM_PASSWORD=PASSWORD, AUTH_ENABLED="false",
               ALLOW_DEV_AUTH="true", INVENTORY_REFRESH_INTERVAL=str(refresh_interval))
    log = tempfile.TemporaryFile(mode="w+")
    spawned = time.perf_counter()
    p = procs.spawn([SERVER], env, stdout=subprocess.DEVNULL, stderr=log)
    return p, port, spawned, log


def wait_ready(p, port, spawned, log, limit_s):
    while time.perf_counter() - spawned < limit_s:
        if p.poll() is not None:
            log.seek(0)
            raise Failure(f"the server exited with {p.returncode}: {log.read()[-2000:]}")
        try:
            status, _ = request(port, "GET", "/readyz", timeout=1.0)
            if status == 200:
                return time.perf_counter() - spawned
        except OSError:
            pass
        time.sleep(0.01)
    raise Failure(f"the server was not ready after {limit_s} s")


def refresh_round(pid, sim_pids, port, hosts):
    """Refreshes every host now (POST /api/v1/inventory/refresh, which answers once every host
    has); returns (seconds, the server's CPU seconds, the simulators' CPU seconds)."""
    _, cpu0 = proc_stat(pid)
    sims0 = sum(proc_stat(s)[1] for s in sim_pids)
    t0 = time.perf_counter()
    status, body = request(port, "POST", "/api/v1/inventory/refresh", timeout=300.0)
    took = time.perf_counter() - t0
    _, cpu1 = proc_stat(pid)
    sims1 = sum(proc_stat(s)[1] for s in sim_pids)
    if status != 200:
        raise Failure(f"inventory refresh: {status} {body[:300]!r}")
    answer = json.loads(body)
    if answer.get("connected") != len(hosts) or answer.get("failed"):
        raise Failure(f"inventory refresh: {body[:300]!r}")
    return took, cpu1 - cpu0, sims1 - sims0


def wrk(paths, port, seconds, connections):
    """p50 and p99 in ms, and requests per second, of GET over `paths` (rotating)."""
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    try:
        quoted = ",".join(json.dumps(p) for p in paths)
        script.write(f"""
local paths = {{{quoted}}}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %d %d %d\\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests, summary.errors.status
    + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.duration))
end
""")
        script.close()
        base = f"http://127.0.0.1:{port}"
        # Warm-up, then the measured run.
        subprocess.run(["wrk", "-t2", f"-c{connections}", "-d2s", "-s", script.name, base],
                       capture_output=True, text=True, timeout=60)
        r = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--timeout",
                            "10s", "-s", script.name, base], capture_output=True, text=True,
                           timeout=seconds + 60)
    finally:
        os.unlink(script.name)
    m = re.search(r"RESULT ([0-9.]+) ([0-9.]+) (\d+) (\d+) (\d+)", r.stdout)
    if r.returncode != 0 or not m:
        raise Failure(f"wrk failed: {r.stdout[-500:]} {r.stderr[-500:]}")
    p50, p99, requests, errors, duration_us = m.groups()
    if int(errors):
        raise Failure(f"wrk saw {errors} errors: {r.stdout[-500:]}")
    return float(p50), float(p99), int(requests) / (int(duration_us) / 1e6)


def measure(size, args):
    hosts = size // args.vms_per_host
    procs = Processes()
    try:
        addresses, sim_pids = start_sims(procs, hosts, args.vms_per_host, args.hosts_per_sim,
                                         args.latency_ms)
        p, port, spawned, log = start_server(procs, addresses, args.refresh_interval)
        first_ready = wait_ready(p, port, spawned, log, args.ready_limit)
        # A restart: the hosts keep what the first start deployed (scripts and provisioning
        # ISOs), as they do when a server pod is replaced without a new version.
        procs.stop(p)
        p, port, spawned, log = start_server(procs, addresses, args.refresh_interval)
        ready = wait_ready(p, port, spawned, log, args.ready_limit)
        status, body = request(port, "GET", "/api/v1/status")
        vms = json.loads(body).get("vms") if status == 200 else None
        rounds = [refresh_round(p.pid, sim_pids, port, addresses) for _ in range(2)]
        refresh_s, cpu_s, sims_cpu_s = rounds[-1]
        rss, _ = proc_stat(p.pid)
        # Page URLs: the first pages of a cursor walk.
        pages = ["/api/v1/vms?limit=100"]
        cursor = None
        ids = []
        for _ in range(10):
            path = "/api/v1/vms?limit=100" + (f"&cursor={cursor}" if cursor else "")
            status, body = request(port, "GET", path)
            page = json.loads(body)
            ids += [v["id"] for v in page["vms"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
            pages.append("/api/v1/vms?limit=100&cursor=" + cursor)
        if page["total"] != size:
            raise Failure(f"the list holds {page['total']} VMs, expected {size}")
        page_p50, page_p99, page_rps = wrk(pages, port, args.seconds, args.connections)
        one_p50, one_p99, one_rps = wrk([f"/api/v1/vms/{i}" for i in ids[:1000]], port,
                                        args.seconds, args.connections)
        rss_after, _ = proc_stat(p.pid)
        ui = None
        if args.ui:
            # The browser figures on this fleet: benches/ui_scale.py against the running server.
            python = os.path.join(ROOT, ".venv/bin/python")
            r = subprocess.run([python if os.path.exists(python) else sys.executable,
                                os.path.join(ROOT, "benches/ui_scale.py"), "--url",
                                f"http://127.0.0.1:{port}", "--runs", str(args.ui_runs),
                                "--seconds", "10", "--rate", str(args.ui_rate)],
                               capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise Failure(f"ui_scale.py failed: {r.stdout[-1000:]} {r.stderr[-1000:]}")
            ui = r.stdout
        return {
            "size": size, "hosts": hosts, "vms": vms, "first_ready_s": first_ready,
            "ready_s": ready, "refresh_s": refresh_s,
            "first_refresh_s": rounds[0][0], "cpu_per_round_s": cpu_s,
            "sims_cpu_per_round_s": sims_cpu_s, "rss_mb": rss,
            "rss_after_load_mb": rss_after, "page_p50_ms": page_p50, "page_p99_ms": page_p99,
            "page_rps": page_rps, "one_p50_ms": one_p50, "one_p99_ms": one_p99,
            "one_rps": one_rps, "ui": ui,
        }
    finally:
        procs.stop_all()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000",
                        help="comma-separated fleet sizes in VMs")
    parser.add_argument("--vms-per-host", type=int, default=100)
    parser.add_argument("--hosts-per-sim", type=int, default=100,
                        help="simulated hosts per aetherv-hostsim process")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--refresh-interval", type=int, default=30,
                        help="INVENTORY_REFRESH_INTERVAL of the server, seconds")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--ready-limit", type=float, default=900.0,
                        help="seconds a start may take before the benchmark gives up")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--ui", action="store_true",
                        help="also run benches/ui_scale.py (headless Chromium) against each "
                             "fleet; needs .venv and chromium as scripts/test installs them")
    parser.add_argument("--ui-runs", type=int, default=3)
    parser.add_argument("--ui-rate", type=float, default=25.0,
                        help="power actions per second during the stall measurement")
    args = parser.parse_args()
    if not args.no_build:
        build()
    ensure_wrk()
    raise_fd_limit()
    print(f"machine: {os.cpu_count()} CPUs shared by the server, the simulators and wrk; "
          f"{args.vms_per_host} VMs per host, {args.latency_ms} ms latency per request, "
          f"{args.connections} connections", flush=True)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args)
        results.append(r)
        print(f"\n{size:,} VMs ({r['hosts']} hosts):", flush=True)
        print(f"  ready after first start  {r['first_ready_s']:8.2f} s  (deploys the scripts and "
              "the provisioning ISOs to every host)")
        print(f"  ready after restart      {r['ready_s']:8.2f} s  (hosts already deployed)")
        print(f"  refresh round            {r['refresh_s']:8.2f} s  (first round "
              f"{r['first_refresh_s']:.2f} s)")
        print(f"  CPU per refresh round    {r['cpu_per_round_s']:8.2f} s  (the simulators: "
              f"{r['sims_cpu_per_round_s']:.2f} s)")
        print(f"  server RSS               {r['rss_mb']:8.1f} MB  (after load "
              f"{r['rss_after_load_mb']:.1f} MB)")
        print(f"  100-row page p50 / p99   {r['page_p50_ms']:8.2f} / {r['page_p99_ms']:.2f} ms "
              f"({r['page_rps']:.0f} req/s)")
        print(f"  one VM p50 / p99         {r['one_p50_ms']:8.2f} / {r['one_p99_ms']:.2f} ms "
              f"({r['one_rps']:.0f} req/s)", flush=True)
        if r["ui"]:
            print("  web UI (benches/ui_scale.py):")
            for ui_line in r["ui"].splitlines():
                print(f"    {ui_line}")
    last = results[-1]
    print(f"\ntargets at {last['size']:,} VMs:")
    for key, label, unit in (("ready_s", "ready after restart", "s"),
                             ("refresh_s", "refresh round", "s"),
                             ("rss_mb", "server RSS", "MB"),
                             ("page_p99_ms", "100-row page p99", "ms")):
        ok = last[key] <= TARGETS[key]
        print(f"  {label:<20} {last[key]:8.2f} {unit:<3} target <= {TARGETS[key]:g} "
              f"{'PASS' if ok else 'MISS'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
