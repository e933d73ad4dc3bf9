"""Fixtures for the web UI tests: the real aetherv-server binary in demo mode and a headless
Chromium driven through Selenium (Debian's chromium and chromium-driver).

The server binary is built by scripts/test and passed in through AETHERV_SERVER. The server
listens on a free loopback port; nothing leaves the machine. Screenshots go to
target/ui-screenshots/. The server and the browser are stopped at the end, also on failure.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "target" / "ui-screenshots"
READY_TIMEOUT = 60
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Variables that would switch the server out of the open demo mode.
CLEARED = (
    "HYPERV_HOSTS",
    "HOSTS_FILE",
    "OIDC_ISSUER_URL",
    "AUTH_ENABLED",
    "ALLOW_DEV_AUTH",
    "PUBLIC_URL",
    "LOG_FORMAT",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One running aetherv-server in demo mode."""

    def __init__(self, binary: str, **demo):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.mkdtemp(prefix="aetherv-ui-")
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(
            LISTEN_ADDR=f"127.0.0.1:{self.port}",
            SECRETS_DIR=self.tmp,
            DEMO_HOSTS="5",
            DEMO_CLUSTERS="2",
            DEMO_VMS_PER_HOST="8",
            LOG_LEVEL="info",
        )
        env.update({key: str(value) for key, value in demo.items()})
        self.log_path = Path(self.tmp) / "server.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.tmp
        )

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"aetherv-server exited with {self.proc.returncode}: {self.output()}"
                )
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except OSError as e:
                last = str(e)
            time.sleep(0.3)
        raise RuntimeError(
            f"aetherv-server not ready within {READY_TIMEOUT} s ({last}): {self.output()}"
        )

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def get(self, path: str):
        """GETs an API path and returns the decoded JSON."""
        req = urllib.request.Request(self.base + path, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def post(self, path: str, body):
        """POSTs JSON to an API path and returns the decoded JSON answer."""
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("AETHERV_SERVER")
    if not binary or not os.path.exists(binary):
        pytest.fail(f"AETHERV_SERVER must name the built server binary (scripts/test sets it); got {binary!r}")
    srv = Server(binary)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def start_server():
    """Starts further servers with other demo settings (e.g. `DEMO_HOSTS=50`); each is stopped
    at the end of the session."""
    binary = os.environ.get("AETHERV_SERVER")
    if not binary or not os.path.exists(binary):
        pytest.fail(f"AETHERV_SERVER must name the built server binary (scripts/test sets it); got {binary!r}")
    started = []

    def start(**demo):
        # These fleets are for the UI's scale; building the provisioning ISOs and copying them
        # to every host would only delay readiness (the ISOs have their own tests).
        demo.setdefault("AETHERV_PROVISIONING_ISOS", "false")
        srv = Server(binary, **demo)
        started.append(srv)
        srv.wait_ready()
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture(scope="session")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: install chromium and chromium-driver (scripts/test does)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(driver, name: str):
        path = SCREENSHOTS / f"{name}.png"
        assert driver.save_screenshot(str(path)), f"could not save {path}"
        assert path.stat().st_size > 1000, f"{path} is suspiciously small"
        return path

    return save
