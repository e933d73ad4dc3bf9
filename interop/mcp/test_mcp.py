"""The MCP endpoint (/mcp) driven by the official Python MCP SDK (PyPI `mcp`) against the real
aetherv-server binary in demo mode (AETHERV_SERVER, set by scripts/test). Every wait is bounded.
"""

import asyncio
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
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

READY_TIMEOUT = 60
CALL_TIMEOUT = 60
CLEARED = (
    "HYPERV_HOSTS", "HOSTS_FILE", "OIDC_ISSUER_URL", "AUTH_ENABLED", "ALLOW_DEV_AUTH",
    "PUBLIC_URL", "LOG_FORMAT", "MCP_MODE", "MCP_ALLOW_HOSTS", "MCP_ALLOW_CLUSTERS",
    "MCP_ALLOW_VMS", "MCP_WRITE_RATE_PER_MINUTE",
)
WRITE_TOOLS = {"provision_vm", "power_vm", "cancel_job", "delete_vm", "turn_off_vm",
               "enter_maintenance", "resume_host", "evacuate_host", "refresh_inventory"}
GUEST_PW = "Mcp-Interop-Pw-1!"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, **extra):
        binary = os.environ.get("AETHERV_SERVER")
        if not binary or not os.path.exists(binary):
            pytest.fail(f"AETHERV_SERVER must name the built server binary; got {binary!r}")
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.mkdtemp(prefix="aetherv-mcp-")
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(
            LISTEN_ADDR=f"127.0.0.1:{self.port}", SECRETS_DIR=self.tmp, DEMO_HOSTS="2",
            DEMO_CLUSTERS="0", DEMO_VMS_PER_HOST="3", LOG_LEVEL="info", **extra,
        )
        self.log_path = Path(self.tmp) / "server.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.tmp
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aetherv-server exited: {self.output()}")
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.HTTPError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"aetherv-server not ready: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

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


@pytest.fixture(scope="module")
def read_only():
    srv = Server()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def read_write():
    srv = Server(MCP_MODE="read_write", MCP_ALLOW_VMS="mcp-*")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def scoped():
    srv = Server(MCP_MODE="read_write", MCP_ALLOW_HOSTS="hv01")
    yield srv
    srv.stop()


async def _session(base, body):
    async with streamable_http_client(base + "/mcp") as (read, write):
        async with ClientSession(read, write) as session:
            await asyncio.wait_for(session.initialize(), CALL_TIMEOUT)
            return await asyncio.wait_for(body(session), CALL_TIMEOUT * 3)


def run(base, body):
    return asyncio.run(_session(base, body))


async def call(session, name, args):
    result = await asyncio.wait_for(session.call_tool(name, args), CALL_TIMEOUT)
    return result


def text(result) -> str:
    return " ".join(c.text for c in result.content if getattr(c, "text", None))


def test_read_only_lists_no_write_tools(read_only):
    async def body(session):
        tools = await session.list_tools()
        names = {t.name for t in tools.tools}
        assert {"list_vms", "get_vm", "get_job", "list_hosts"} <= names
        assert not (names & WRITE_TOOLS), names
        vms = await call(session, "list_vms", {"limit": 2})
        assert not vms.is_error, text(vms)
        assert len(vms.structured_content["vms"]) == 2
        assert vms.structured_content["total"] >= 3
        assert vms.structured_content["next_cursor"]
        more = await call(session, "list_vms", {"limit": 2, "cursor": vms.structured_content["next_cursor"]})
        assert not more.is_error, text(more)
        first = {v["id"] for v in vms.structured_content["vms"]}
        assert first.isdisjoint({v["id"] for v in more.structured_content["vms"]})
        refused = await call(session, "power_vm", {"vm_id": vms.structured_content["vms"][0]["id"], "action": "start"})
        assert refused.is_error
        assert "read_only" in text(refused)
    run(read_only.base, body)


def test_read_write_provision_follow_and_delete(read_write):
    async def body(session):
        tools = await session.list_tools()
        names = {t.name for t in tools.tools}
        assert WRITE_TOOLS <= names
        hosts = await call(session, "list_hosts", {})
        host = hosts.structured_content["hosts"][0]["name"]
        started = await call(session, "provision_vm", {
            "vm_name": "mcp-web-01", "hyperv_host": host, "image_name": "Ubuntu 24.04 LTS",
            "gb_ram": 2, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": GUEST_PW,
        })
        assert not started.is_error, text(started)
        assert GUEST_PW not in json.dumps(started.structured_content) + text(started)
        job_id = started.structured_content["job_id"]
        deadline = time.monotonic() + 120
        while True:
            job = await call(session, "get_job", {"job_id": job_id})
            status = job.structured_content["status"]
            if status in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, f"job still {status}"
            await asyncio.sleep(0.5)
        assert status == "succeeded", text(job)
        assert GUEST_PW not in json.dumps(job.structured_content)
        vm_id = job.structured_content["vm_id"]

        log = await call(session, "get_job_log", {"job_id": job_id, "lines": 3})
        assert not log.is_error and len(log.structured_content["lines"]) <= 3

        args = {"vm_id": vm_id, "force": True, "delete_disks": True}
        preview = await call(session, "delete_vm", args)
        assert not preview.is_error, text(preview)
        assert preview.structured_content["done"] is False
        assert "mcp-web-01" in preview.structured_content["preview"]
        token = preview.structured_content["confirmation_token"]
        still = await call(session, "get_vm", {"vm_id": vm_id})
        assert not still.is_error, "the preview must not delete"

        wrong = await call(session, "delete_vm", dict(args, confirmation_token="0" * 32))
        assert wrong.is_error and "unknown" in text(wrong)
        other_args = await call(session, "delete_vm", dict(args, delete_disks=False, confirmation_token=token))
        assert other_args.is_error and "another" in text(other_args)

        done = await call(session, "delete_vm", dict(args, confirmation_token=token))
        assert not done.is_error, text(done)
        delete_job = done.structured_content["job_id"]
        reused = await call(session, "delete_vm", dict(args, confirmation_token=token))
        assert reused.is_error
        deadline = time.monotonic() + 120
        while True:
            job = await call(session, "get_job", {"job_id": delete_job})
            if job.structured_content["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
        assert job.structured_content["status"] == "succeeded", text(job)

        # A demo VM is outside MCP_ALLOW_VMS=mcp-*.
        vms = await call(session, "list_vms", {"host": host})
        outside = next(v for v in vms.structured_content["vms"] if not v["name"].startswith("mcp-"))
        refused = await call(session, "turn_off_vm", {"vm_id": outside["id"]})
        assert refused.is_error and "MCP_ALLOW_VMS" in text(refused)
        refused = await call(session, "power_vm", {"vm_id": outside["id"], "action": "save"})
        assert refused.is_error and "MCP_ALLOW_VMS" in text(refused)

        # A refresh of every host, and of one.
        everything = await call(session, "refresh_inventory", {})
        assert not everything.is_error, text(everything)
        count = len(hosts.structured_content["hosts"])
        assert everything.structured_content["hosts"] == count, everything.structured_content
        assert everything.structured_content["complete"] is True
        assert text(everything).startswith(f"all {count} hosts answered in "), text(everything)
        one = await call(session, "refresh_inventory", {"hostname": host})
        assert not one.is_error, text(one)
        assert one.structured_content["name"] == host and text(one).startswith(f"host {host} refreshed: ")
        unknown = await call(session, "refresh_inventory", {"hostname": "no-such-host"})
        assert unknown.is_error and "not_found" in text(unknown), text(unknown)
    run(read_write.base, body)
    log = read_write.output()
    audit = [l for l in log.splitlines() if "aetherv::mcp::audit" in l]
    assert any("provision_vm" in l for l in audit), log[-3000:]
    assert any("delete_vm" in l for l in audit)
    assert GUEST_PW not in log


def test_refreshing_every_host_needs_allow_lists_that_allow_every_host(scoped):
    async def body(session):
        everything = await call(session, "refresh_inventory", {})
        assert everything.is_error and "MCP_ALLOW_HOSTS (hv01)" in text(everything), text(everything)
        outside = await call(session, "refresh_inventory", {"hostname": "hv02"})
        assert outside.is_error and "MCP_ALLOW_HOSTS" in text(outside), text(outside)
        inside = await call(session, "refresh_inventory", {"hostname": "hv01"})
        assert not inside.is_error, text(inside)
        assert text(inside) == "host hv01 refreshed: connected", text(inside)
    run(scoped.base, body)
