"""Following work over MCP with the official Python SDK: resources (aetherv://vms/{id},
aetherv://jobs/{id}) and wait_for_job with progress notifications; then the endpoint behind
OIDC, where a reader token reads but cannot call write tools. Uses test_mcp's server helper.
Every wait is bounded.
"""

import asyncio
import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from test_mcp import CALL_TIMEOUT, GUEST_PW, Server, call, run, text


@pytest.fixture(scope="module")
def writer_demo():
    srv = Server(MCP_MODE="read_write", MCP_ALLOW_VMS="mcpf-*")
    yield srv
    srv.stop()


def test_resources_and_wait_for_job_with_progress(writer_demo):
    async def body(session):
        templates = await session.list_resource_templates()
        uris = {t.uri_template for t in templates.resource_templates}
        assert uris == {"aetherv://vms/{id}", "aetherv://jobs/{id}"}, uris

        hosts = await call(session, "list_hosts", {})
        host = hosts.structured_content["hosts"][0]["name"]
        started = await call(session, "provision_vm", {
            "vm_name": "mcpf-01", "hyperv_host": host, "image_name": "Ubuntu 24.04 LTS",
            "gb_ram": 2, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": GUEST_PW,
        })
        assert not started.is_error, text(started)
        job_id = started.structured_content["job_id"]

        seen = []

        async def on_progress(progress, total, message):
            seen.append((progress, total, message))

        done = await asyncio.wait_for(
            session.call_tool("wait_for_job", {"job_id": job_id, "timeout_seconds": 110},
                              progress_callback=on_progress),
            CALL_TIMEOUT * 2,
        )
        assert not done.is_error, text(done)
        assert done.structured_content["status"] == "succeeded", text(done)
        assert seen, "no progress notification arrived"
        percents = [p for p, _, _ in seen]
        assert percents == sorted(set(percents)), f"progress must grow: {percents}"
        assert all(t == 100 for _, t, _ in seen)
        assert percents[-1] == 100
        assert any(m for _, _, m in seen), "progress carries the step"
        assert GUEST_PW not in json.dumps([list(s) for s in seen])

        job = await session.read_resource(f"aetherv://jobs/{job_id}")
        job_doc = json.loads(job.contents[0].text)
        assert job_doc["id"] == job_id and job_doc["status"] == "succeeded"
        assert GUEST_PW not in job.contents[0].text
        vm = await session.read_resource(f"aetherv://vms/{job_doc['vm_id']}")
        assert json.loads(vm.contents[0].text)["name"] == "mcpf-01"

        for bad in ("aetherv://vms/00000000-0000-0000-0000-000000000000", "aetherv://hosts/x"):
            with pytest.raises(Exception) as raised:
                await session.read_resource(bad)
            assert "aetherv://" in str(raised.value) or "not" in str(raised.value).lower()

        # A short wait on a job that has ended answers at once; on an unknown job it says so.
        again = await call(session, "wait_for_job", {"job_id": job_id, "timeout_seconds": 1})
        assert again.structured_content["status"] == "succeeded"
        unknown = await call(session, "wait_for_job", {"job_id": "no-such-job"})
        assert unknown.is_error and "not_found" in text(unknown)
    run(writer_demo.base, body)
    audit = [l for l in writer_demo.output().splitlines() if "aetherv::mcp::audit" in l]
    assert any("mcp resource read" in l and "aetherv://jobs/" in l for l in audit)
    assert any("wait_for_job" in l for l in audit)


# ------------------------------------------------------------------------------------------
# OIDC: a loopback issuer (discovery + JWKS) signing RS256 tokens with a fresh key.

CLIENT_ID = "aetherv-mcp-test"


class Issuer:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()

        def b64(n):
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        self.jwks = {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                               "n": b64(numbers.n), "e": b64(numbers.e)}]}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    doc = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks",
                           "authorization_endpoint": issuer.url + "/auth",
                           "token_endpoint": issuer.url + "/token",
                           "response_types_supported": ["code"],
                           "subject_types_supported": ["public"],
                           "id_token_signing_alg_values_supported": ["RS256"]}
                elif self.path == "/jwks":
                    doc = issuer.jwks
                else:
                    self.send_error(404)
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, subject, roles):
        now = int(time.time())
        claims = {"iss": self.url, "aud": CLIENT_ID, "sub": subject, "iat": now, "nbf": now - 5,
                  "exp": now + 600, "roles": roles}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def oidc_server():
    issuer = Issuer()
    srv = Server(OIDC_ISSUER_URL=issuer.url, OIDC_CLIENT_ID=CLIENT_ID, OIDC_READER_ROLE="readers",
                 OIDC_WRITER_ROLE="writers", MCP_MODE="read_write", MCP_ALLOW_VMS="*")
    yield srv, issuer
    srv.stop()
    issuer.stop()


async def _as(base, token, body):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=CALL_TIMEOUT) as client:
        async with streamable_http_client(base + "/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await asyncio.wait_for(session.initialize(), CALL_TIMEOUT)
                return await asyncio.wait_for(body(session), CALL_TIMEOUT * 2)


def test_reader_token_reads_but_cannot_write(oidc_server):
    srv, issuer = oidc_server
    reader = issuer.token("alice", ["readers"])
    writer = issuer.token("bob", ["writers"])

    async def as_reader(session):
        vms = await call(session, "list_vms", {"limit": 1})
        assert not vms.is_error, text(vms)
        vm = vms.structured_content["vms"][0]
        for name, args in (("power_vm", {"vm_id": vm["id"], "action": "start"}),
                           ("cancel_job", {"job_id": "x"}),
                           ("delete_vm", {"vm_id": vm["id"]})):
            refused = await call(session, name, args)
            assert refused.is_error, name
            assert "writer" in text(refused), text(refused)
        still = await call(session, "get_vm", {"vm_id": vm["id"]})
        assert not still.is_error
        return vm["id"]

    vm_id = asyncio.run(_as(srv.base, reader, as_reader))

    async def as_writer(session):
        preview = await call(session, "turn_off_vm", {"vm_id": vm_id})
        assert not preview.is_error, text(preview)
        assert preview.structured_content["done"] is False

    asyncio.run(_as(srv.base, writer, as_writer))

    # No token, or a token signed by another key, never reaches a tool.
    for token in (None, jwt.encode({"iss": issuer.url, "aud": CLIENT_ID, "sub": "eve",
                                    "exp": int(time.time()) + 600, "roles": ["writers"]},
                                   rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                   algorithm="RS256", headers={"kid": "k1"})):
        with pytest.raises(Exception):
            asyncio.run(_as(srv.base, token, as_reader))
    audit = [l for l in srv.output().splitlines() if "aetherv::mcp::audit" in l]
    assert any("alice" in l and "power_vm" in l and "refused" in l for l in audit), audit[-5:]
    assert reader not in srv.output() and writer not in srv.output()
