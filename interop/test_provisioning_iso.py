"""The provisioning ISOs the server builds at start, read back with independent tools.

The server binary (AETHERV_SERVER) starts in demo mode with a stand-in agent binary
(AETHERV_GUEST_AGENT) and an output folder (AETHERV_ISO_OUTPUT_DIR); once both ISOs are there
it is stopped. pycdlib then reads each image: the volume label (cidata for cloud-init's
NoCloud data source), the Joliet and Rock Ridge file names, every file's contents, and the
version file (the first 16 hex digits of SHA-256 over the sorted "name NUL sha256 LF" lines
of the other files). The bootstrap user-data must pass `cloud-init schema` (Debian package
cloud-init; scripts/test installs it).
"""

import hashlib
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pycdlib
import pytest

REPO = Path(__file__).resolve().parent.parent
LINUX_ASSETS = REPO / "aetherv-server" / "assets" / "iso" / "linux"
WINDOWS_ASSETS = REPO / "aetherv-server" / "assets" / "iso" / "windows"
STARTUP_TIMEOUT = 90


def _server() -> str:
    path = os.environ.get("AETHERV_SERVER")
    if not path or not os.path.exists(path):
        pytest.fail(f"AETHERV_SERVER must name the built server (scripts/test sets it); got {path!r}")
    return path


def content_version(files: dict[str, bytes]) -> str:
    lines = sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files.items())
    digest = hashlib.sha256()
    for name, sha in lines:
        digest.update(name.encode() + b"\0" + sha.encode() + b"\n")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("isos")
    agent = work / "aetherv-guest"
    agent.write_bytes(bytes((i * 7 + 3) % 256 for i in range(300_000)))
    out = work / "out"
    env = dict(
        os.environ,
        LISTEN_ADDR="127.0.0.1:0",
        SECRETS_DIR="/nonexistent-aetherv-test",
        AETHERV_DEMO_PASSWORD="demo-Passw0rd",
        DEMO_HOSTS="1",
        DEMO_VMS_PER_HOST="0",
        AETHERV_GUEST_AGENT=str(agent),
        AETHERV_ISO_OUTPUT_DIR=str(out),
    )
    for var in ("HYPERV_HOSTS", "HOSTS_FILE", "OIDC_ISSUER_URL"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [_server()], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        found = {}
        while time.monotonic() < deadline and len(found) < 2:
            if out.is_dir():
                for iso in out.glob("*.iso"):
                    stem = iso.name.split("-", 1)[0]
                    found[stem] = iso
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {proc.stderr.read()}")
            time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert set(found) == {"LinuxProvisioning", "WindowsProvisioning"}, found
    return {"agent": agent.read_bytes(), **found}


def read_iso(path: Path):
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        joliet = sorted(
            c.file_identifier().decode("utf-16-be").split(";")[0]
            for c in iso.list_children(joliet_path="/")
            if not (c.is_dot() or c.is_dotdot())
        )
        names = sorted(
            c.rock_ridge.name().decode()
            for c in iso.list_children(rr_path="/")
            if not (c.is_dot() or c.is_dotdot())
        )
        files = {}
        for name in names:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path="/" + name)
            files[name] = buf.getvalue()
        return label, joliet, names, files
    finally:
        iso.close()


def test_linux_iso_has_the_cidata_label_names_and_contents(built):
    label, joliet, names, files = read_iso(built["LinuxProvisioning"])
    assert label == "cidata"
    expected = ["aetherv-guest", "aetherv-guest.service", "meta-data", "user-data", "version"]
    assert names == expected
    assert joliet == expected
    assert files["aetherv-guest"] == built["agent"]
    for name in ("user-data", "meta-data", "aetherv-guest.service"):
        assert files[name] == (LINUX_ASSETS / name).read_bytes(), name
    others = {k: v for k, v in files.items() if k != "version"}
    assert files["version"].decode() == content_version(others)
    unit = files["aetherv-guest.service"].decode()
    assert "ExecStart=/usr/local/sbin/aetherv-guest run" in unit
    # The sidecar the server deploys next to the ISO carries the same version.
    assert len(files["version"]) == 16


def test_windows_iso_has_the_agent_scripts_and_version(built):
    label, joliet, names, files = read_iso(built["WindowsProvisioning"])
    assert label == "AETHERV_WIN"
    expected = sorted(p.name for p in WINDOWS_ASSETS.iterdir()) + ["version"]
    assert names == sorted(expected)
    assert joliet == sorted(expected)
    for name in names:
        if name != "version":
            assert files[name] == (WINDOWS_ASSETS / name).read_bytes(), name
    others = {k: v for k, v in files.items() if k != "version"}
    assert files["version"].decode() == content_version(others)


def test_the_bootstrap_user_data_passes_cloud_init_schema(built, tmp_path):
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        pytest.fail("cloud-init is not installed (Debian package cloud-init; scripts/test installs it)")
    _, _, _, files = read_iso(built["LinuxProvisioning"])
    user_data = tmp_path / "user-data"
    user_data.write_bytes(files["user-data"])
    assert files["user-data"].startswith(b"#cloud-config\n")
    result = subprocess.run(
        [cloud_init, "schema", "--config-file", str(user_data)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a broken document is refused.
    broken = tmp_path / "broken"
    broken.write_text("#cloud-config\nruncmd: 5\nwrite_files: nope\n")
    result = subprocess.run(
        [cloud_init, "schema", "--config-file", str(broken)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    # The bootstrap installs the agent, its version and its unit from the media.
    text = files["user-data"].decode()
    for needle in (
        "/usr/local/sbin/aetherv-guest",
        "/usr/local/lib/aetherv-guest/version",
        "/etc/systemd/system/aetherv-guest.service",
        "enable, aetherv-guest.service",
    ):
        assert needle in text, needle
