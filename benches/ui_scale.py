#!/usr/bin/env python3
"""UI benchmark: the VM list in headless Chromium against a release server with a large fleet.

Starts the release server in demo mode (`--hosts` x `--vms-per-host` simulated VMs; the demo
allows at most 250 x 200 = 50,000) or uses a running server (`--url`, authentication off: for
100,000 VMs a fleet-mode server against separate aetherv-hostsim processes, e.g. the one the
scale benchmark starts), then measures in the page, with the same code as the browser tests
(interop/ui/uitiming.py):

- usable after navigation: a full page load of #/vms until the first page of rows is painted
  (median of --runs);
- sort to paint (by name descending, by memory) and filter to paint (state=Running, and
  clearing it again), median of --runs each;
- the longest main-thread stall (PerformanceObserver `longtask`) while the page receives
  events: power actions are sent through the REST API at --rate per second for --seconds;
  the events per second the page applied are printed next to it.

Prints the figures against the targets of issue 19 (usable <= 1 s, sort/filter paint
<= 150 ms, longest stall with 50 events/s <= 100 ms). Informational: exits 0 unless something
failed. Usage (from the repository root, after scripts/test created .venv and installed
chromium and chromium-driver):

    .venv/bin/python benches/ui_scale.py [--hosts 250 --vms-per-host 200] [--url URL]
        [--server PATH] [--rate 15] [--seconds 15] [--runs 5] [--no-build]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "interop", "ui"))

import uitiming  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

SERVER = os.path.join(ROOT, "target/release/aetherv-server")
CLEARED = ("HYPERV_HOSTS", "HOSTS_FILE", "OIDC_ISSUER_URL", "AUTH_ENABLED", "ALLOW_DEV_AUTH",
           "PUBLIC_URL", "LOG_FORMAT")
TARGETS = {"usable": 1000.0, "paint": 150.0, "stall": 100.0}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base, path):
    with urllib.request.urlopen(urllib.request.Request(base + path, headers={"Accept": "application/json"}),
                                timeout=60) as r:
        return json.loads(r.read())


class Server:
    def __init__(self, binary, hosts, vms_per_host):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.mkdtemp(prefix="aetherv-ui-bench-")
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(LISTEN_ADDR=f"127.0.0.1:{self.port}", SECRETS_DIR=self.tmp, LOG_LEVEL="warn",
                   DEMO_HOSTS=str(hosts), DEMO_VMS_PER_HOST=str(vms_per_host), DEMO_CLUSTERS="10")
        self.log = open(os.path.join(self.tmp, "server.log"), "w")
        started = time.monotonic()
        self.proc = subprocess.Popen([binary], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.tmp)
        while True:
            if self.proc.poll() is not None:
                self.log.flush()
                raise SystemExit("aetherv-server exited: "
                                 + open(os.path.join(self.tmp, "server.log")).read()[-2000:])
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > 600:
                raise SystemExit("aetherv-server not ready within 600 s")
            time.sleep(0.2)
        self.ready_s = time.monotonic() - started

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def browser():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--lang=en-US"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def line(label, value, target, unit="ms"):
    verdict = "PASS" if value <= target else "MISS"
    print(f"  {label:<48} {value:>9.0f} {unit}   target <= {target:.0f} {unit}   {verdict}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=250)
    ap.add_argument("--vms-per-host", type=int, default=200)
    ap.add_argument("--url", help="use this running server (authentication off) instead of starting one")
    ap.add_argument("--server", default=SERVER, help="the server binary to start (default: the release build)")
    ap.add_argument("--rate", type=float, default=15.0,
                    help="power actions per second while measuring stalls (about 3.5 events each)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()

    server = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        if not args.no_build and args.server == SERVER:
            subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "aetherv-server",
                            "--bin", "aetherv-server"], cwd=ROOT, check=True)
        server = Server(args.server, args.hosts, args.vms_per_host)
        base = server.base
    driver = browser()
    try:
        total = get(base, "/api/v1/vms?limit=1")["total"]
        print(f"UI benchmark: {total:,} VMs at {base}"
              + (f" (server ready in {server.ready_s:.1f} s)" if server else ""))
        usable, sort_name, sort_mem, filt, clear = [], [], [], [], []
        for _ in range(args.runs):
            usable.append(uitiming.open_vm_list(driver, base))
            sort_name.append(uitiming.sort_by(driver, "name", "-name"))
            sort_mem.append(uitiming.sort_by(driver, "memory_assigned_bytes", "memory_assigned_bytes"))
            filt.append(uitiming.filter_state(driver, "Running"))
            clear.append(uitiming.filter_state(driver, ""))
        rows = driver.execute_script("return document.querySelectorAll('#vm-table tbody tr').length")
        nodes = driver.execute_script("return document.getElementsByTagName('*').length")

        # The stall: the first page sorted by name, with its VMs (and others) powered off and on.
        uitiming.open_vm_list(driver, base, "#/vms?sort=name")
        page = get(base, "/api/v1/vms?limit=100&sort=name")["vms"]
        more = get(base, "/api/v1/vms?limit=400&sort=-name")["vms"]
        vms = [v for v in page + more if v["state"] in ("Running", "Off") and not v["busy_job"]]
        uitiming.start_longtasks(driver)
        with uitiming.PowerLoad(base, vms, args.rate) as load:
            time.sleep(args.seconds)
        longest, count, events, seconds = uitiming.stop_longtasks(driver)

        med = statistics.median
        print(f"  rows in the document: {rows}, DOM elements: {nodes:,}")
        line(f"usable after navigation (median of {args.runs})", med(usable), TARGETS["usable"])
        line("sort by name to paint", med(sort_name), TARGETS["paint"])
        line("sort by memory to paint", med(sort_mem), TARGETS["paint"])
        line("filter state=Running to paint", med(filt), TARGETS["paint"])
        line("clear the filter to paint", med(clear), TARGETS["paint"])
        line(f"longest stall, {events / seconds:.0f} events/s applied", longest, TARGETS["stall"])
        print(f"  ({count} long tasks >= 50 ms in {seconds:.0f} s; {load.sent} power actions sent, "
              f"{load.refused} refused as busy{'; errors: ' + '; '.join(load.errors[:3]) if load.errors else ''})")
        print("  all runs (ms): usable " + ", ".join(f"{x:.0f}" for x in usable)
              + " | sort " + ", ".join(f"{x:.0f}" for x in sort_name)
              + " | filter " + ", ".join(f"{x:.0f}" for x in filt))
    finally:
        driver.quit()
        if server:
            server.stop()


if __name__ == "__main__":
    main()
