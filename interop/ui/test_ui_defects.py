"""UI defects found when the UI was used as an operator would, each checked in the browser
against the real server in demo mode: forms and dialogs, job progress and status, raw values,
the job list, and layout (paths, pickers, toasts).
"""

import re
import secrets
import time
import urllib.error

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from test_ui import (FINISHED, JOB_TIMEOUT, SSH_KEY, css, fill_create_form, follow_job, go, js_errors,
                     pick_host_and_image, submit_create, wait)


def _job_ids(server):
    return {j["id"] for j in server.get("/api/v1/jobs?limit=all")["jobs"]}


def _vm_in(server, vm_state):
    for vm in server.get(f"/api/v1/vms?state={vm_state}&limit=all")["vms"]:
        if not vm["stale"] and not vm["busy_job"]:
            return vm
    raise AssertionError(f"the demo fleet has no idle VM that is {vm_state}")


def _open_vm(browser, server, vm):
    go(browser, server, f"#/vms/{vm['id']}")
    wait(browser, lambda d: css(d, "#vm-name") and d.find_element(By.ID, "vm-name").text == vm["name"])


def _wait_job(server, job_id):
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job = server.get(f"/api/v1/jobs/{job_id}")
        if job["status"] in FINISHED:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


def _small_host(server):
    """A connected host with less than 512 GiB of memory available, and a Linux image on it."""
    for host in server.get("/api/v1/hosts")["hosts"]:
        if host["status"] == "connected" and host["memory_available_bytes"] < 512 << 30:
            facts = server.get(f"/api/v1/hosts/{host['name']}").get("facts") or {}
            for image in facts.get("images") or []:
                if image.get("os_family") == "linux":
                    return host["name"], image["name"]
    raise AssertionError("every demo host has 512 GiB available")


def _provision(server, name, host_and_image=None, **extra):
    host, image = host_and_image or pick_host_and_image(server, "linux")
    body = {"vm_name": name, "hyperv_host": host, "image_name": image, "gb_ram": 1, "cpu_cores": 1,
            "guest_la_uid": "uiadmin", "guest_la_pw": "S3cret-ui-pw!"}
    body.update(extra)
    return server.post("/api/v1/vms/create", body)["job_id"]


def test_failed_submit_focuses_the_first_error_and_the_summary_clears(server, browser):
    host, image = pick_host_and_image(server, "linux")
    fill_create_form(browser, server, host, image, "bad_name")
    # The SSH group (built before the main fields) gets an error too: focus must still go to
    # the first field with an error as the page shows them.
    browser.find_element(By.ID, "f-cnf_ansible_ssh_user").send_keys("ansible")
    submit_create(browser)
    wait(browser, lambda d: d.find_element(By.ID, "err-cnf_ansible_ssh_key").text)
    assert browser.find_element(By.ID, "err-vm_name").text
    assert browser.switch_to.active_element.get_attribute("id") == "f-vm_name"
    summary = browser.find_element(By.ID, "create-error")
    assert summary.text == "Please correct the highlighted fields."

    name = browser.find_element(By.ID, "f-vm_name")
    name.clear()
    name.send_keys("ui-fixed")
    assert summary.text == "Please correct the highlighted fields.", "cleared while a field is still wrong"
    browser.find_element(By.ID, "f-cnf_ansible_ssh_key").send_keys(SSH_KEY)
    wait(browser, lambda d: d.find_element(By.ID, "create-error").text == "",
         message="the summary stays after every field was fixed")
    assert not css(browser, "[aria-invalid=true]")

    # Sizes are GiB on the form as everywhere else.
    form = browser.find_element(By.ID, "create-form").text
    assert "Memory (GiB)" in form and "Disk size (GiB" in form
    assert not re.search(r"\bGB\b", form), "the form still says GB"
    assert js_errors(browser) == []


def test_pickers_show_whole_image_names(server, browser):
    host, _ = pick_host_and_image(server, "linux")
    go(browser, server, "#/create")
    browser.refresh()
    wait(browser, lambda d: len(Select(d.find_element(By.ID, "f-hyperv_host")).options) > 1)
    Select(browser.find_element(By.ID, "f-hyperv_host")).select_by_value(host)
    wait(browser, lambda d: len(Select(d.find_element(By.ID, "f-image_name")).options) > 2)
    # Each picker is at least as wide as its longest choice (text width measured in the page
    # with the picker's own font, plus the padding and 16 px for the arrow).
    for picker in ("f-image_name", "f-hyperv_host"):
        need, have = browser.execute_script("""
            const s = document.getElementById(arguments[0]);
            const ctx = document.createElement("canvas").getContext("2d");
            ctx.font = getComputedStyle(s).font;
            const widest = Math.max(...Array.from(s.options).map(o => ctx.measureText(o.text).width));
            const cs = getComputedStyle(s);
            return [widest + parseFloat(cs.paddingLeft) + parseFloat(cs.paddingRight) + 16, s.clientWidth];
        """, picker)
        assert have >= need, f"{picker} is {have}px wide, its longest choice needs {need:.0f}px"


def test_delete_dialog_offers_force_only_for_a_vm_that_is_not_off(server, browser):
    running = _vm_in(server, "Running")
    before = _job_ids(server)
    _open_vm(browser, server, running)
    wait(browser, lambda d: d.find_element(By.ID, "delete-vm").is_enabled())
    browser.find_element(By.ID, "delete-vm").click()
    wait(browser, lambda d: d.find_element(By.ID, "delete-dialog").is_displayed())
    force = browser.find_element(By.ID, "delete-force-field")
    assert force.is_displayed(), "no Force for a running VM"
    assert "Running" in force.text
    browser.find_element(By.ID, "delete-confirm").send_keys(running["name"])
    submit = browser.find_element(By.ID, "delete-submit")
    assert not submit.is_enabled(), "a running VM could be deleted without Force"
    browser.find_element(By.ID, "delete-force").click()
    assert submit.is_enabled()
    browser.find_element(By.ID, "delete-cancel").click()

    off = _vm_in(server, "Off")
    _open_vm(browser, server, off)
    wait(browser, lambda d: d.find_element(By.ID, "delete-vm").is_enabled())
    browser.find_element(By.ID, "delete-vm").click()
    wait(browser, lambda d: d.find_element(By.ID, "delete-dialog").is_displayed())
    assert not browser.find_element(By.ID, "delete-force-field").is_displayed()
    browser.find_element(By.ID, "delete-confirm").send_keys(off["name"])
    assert browser.find_element(By.ID, "delete-submit").is_enabled()
    browser.find_element(By.ID, "delete-cancel").click()
    assert _job_ids(server) == before, "cancelled dialogs queued a job"


def test_turn_off_and_restart_ask_first_and_the_action_has_one_name(server, browser, screenshot):
    vm = _vm_in(server, "Running")
    before = _job_ids(server)
    _open_vm(browser, server, vm)
    labels = {b.get_attribute("data-action"): b.text for b in css(browser, "button[data-action]")}
    assert labels["stop"] == "Turn off" and labels["shutdown"] == "Shut down"
    assert "Stop" not in labels.values()

    for action in ("restart", "stop"):
        wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]').is_enabled())
        browser.find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]').click()
        dialog = wait(browser, lambda d: d.find_element(By.ID, "confirm-dialog"))
        assert "unsaved work" in dialog.text
        browser.find_element(By.ID, "confirm-cancel").click()
        time.sleep(0.5)
        assert _job_ids(server) == before, f"{action} acted without confirmation"
        assert "#/vms/" in browser.current_url

    browser.find_element(By.CSS_SELECTOR, 'button[data-action="stop"]').click()
    wait(browser, lambda d: d.find_element(By.ID, "confirm-dialog").is_displayed())
    screenshot(browser, "turn-off-confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait(browser, lambda d: "Turn off requested for " + vm["name"] in " ".join(t.text for t in css(d, ".toast")))
    job_id = follow_job(browser)
    assert browser.find_element(By.CSS_SELECTOR, "#job-header h1").text == f"Job: power: Turn off {vm['name']}"

    # The result names states, not Hyper-V's numbers.
    # (read in one step: the job page re-renders live)
    text, pairs = wait(browser, lambda d: d.execute_script("""
        const r = document.getElementById("job-result");
        if (!r) return null;
        const dts = Array.from(r.querySelectorAll("dt")), dds = Array.from(r.querySelectorAll("dd"));
        return [r.innerText, Object.fromEntries(dts.map((dt, i) => [dt.textContent, dds[i].textContent]))];
    """))
    assert pairs.get("Previous state") == "Running" and pairs.get("State") == "Off", pairs
    assert "previous_state" not in text and not re.search(r"^\d+$", text, re.M), text

    go(browser, server, "#/jobs")
    # Rows re-render live: read the row's text in one step.
    row_text = wait(browser, lambda d: d.execute_script(
        "const r = document.querySelector(arguments[0]); return r && r.innerText;",
        f'tr[data-job-id="{job_id}"]'))
    assert "power: Turn off" in row_text, row_text
    # Back to how the fleet was.
    _wait_job(server, server.post(f"/api/v1/vms/{vm['id']}/actions/start", {})["job_id"])


def test_jobs_status_filter_is_in_the_url_and_an_empty_result_says_so(server, browser):
    # A failed job exists: provisioning more memory than any demo host has.
    failed = _wait_job(server, _provision(server, "ui-huge-" + secrets.token_hex(2), _small_host(server), gb_ram=512))
    assert failed["status"] == "failed", failed
    go(browser, server, "#/jobs")
    browser.refresh()
    wait(browser, lambda d: css(d, "#job-table tr[data-job-id]"))
    Select(browser.find_element(By.ID, "filter-job-status")).select_by_value("failed")
    wait(browser, lambda d: "status=failed" in d.current_url, message="the status filter is not in the URL")
    browser.refresh()
    wait(browser, lambda d: css(d, f'#job-table tr[data-job-id="{failed["id"]}"]'))
    assert Select(browser.find_element(By.ID, "filter-job-status")).first_selected_option.get_attribute("value") == "failed"
    assert {r.get_attribute("data-status") for r in css(browser, "#job-table tr[data-job-id]")} == {"failed"}
    # A failed job does not claim 100 %.
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{failed["id"]}"]')
    assert "100%" not in row.text and "failed" in row.text

    empty = next((s for s in ("queued", "cancelled", "running")
                  if server.get(f"/api/v1/jobs?status={s}&limit=1")["total"] == 0), None)
    assert empty, "every status has jobs; nothing to show empty"
    Select(browser.find_element(By.ID, "filter-job-status")).select_by_value(empty)
    message = wait(browser, lambda d: css(d, "#jobs-empty") and d.find_element(By.ID, "jobs-empty").text)
    assert f"No {empty} jobs" in message and "No jobs yet" not in message
    assert css(browser, "#jobs-show-all")

    # The failed job's page: no 100 %, the error in words and sizes in GiB.
    go(browser, server, f"#/jobs/{failed['id']}")
    wait(browser, lambda d: css(d, '#job-status-line [data-status="failed"]'))
    header = browser.find_element(By.ID, "job-header").text
    assert "100%" not in header
    # Sizes in words, not raw byte counts. Ids are taken out first: a UUID's hex groups can
    # hold seven digits in a row by chance (one did, and failed this check).
    error = browser.find_element(By.ID, "job-error").text
    without_ids = re.sub(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", "<id>", error)
    assert not re.search(r"\d{7,}", without_ids), error
    assert js_errors(browser) == []


def test_a_cancel_the_user_asked_for_is_not_an_error(server, browser):
    job_id = _provision(server, "ui-cx-" + secrets.token_hex(2))
    try:
        server.post(f"/api/v1/jobs/{job_id}/cancel", {})
    except urllib.error.HTTPError as e:
        raise AssertionError(f"the job ended before it could be cancelled (HTTP {e.code})")
    job = _wait_job(server, job_id)
    assert job["status"] == "cancelled" and job["cancel_requested"], job
    go(browser, server, f"#/jobs/{job_id}")
    wait(browser, lambda d: css(d, '#job-status-line [data-status="cancelled"]'))
    wait(browser, lambda d: css(d, "#job-log li"))
    assert not css(browser, "#job-error"), "a requested cancel is shown as an error"
    assert not css(browser, ".error-box, .error-text")
    notes = css(browser, "#job-cancelled")
    assert len(notes) == 1 and "at your request" in notes[0].text
    header = browser.find_element(By.ID, "job-header").text
    assert header.lower().count("cancel") <= 2, header  # the status badge and the one note
    assert "100%" not in header


def test_vm_page_names_the_dvd_drive_and_breaks_paths_only_between_folders(server, browser):
    vm = server.get(f"/api/v1/vms/{_vm_in(server, 'Running')['id']}")
    assert vm["dvd_drives"], "the demo VM has no DVD drive"
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        _open_vm(browser, server, vm)
        drives = wait(browser, lambda d: d.find_element(By.ID, "vm-dvd-drives"))
        assert "{" not in drives.text and "controller" not in drives.text, drives.text
        drive = vm["dvd_drives"][0]
        assert drive["controller_type"] in drives.text
        assert ("empty" in drives.text) if not drive["path"] else (drive["path"].split("\\")[-1] in drives.text)

        # The disk list of the Disk actions panel: the longest paths on the page.
        path = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#vm-disk-ops code.path"))
        assert path.text.replace("\n", "") == vm["disks"][0]["path"]
        lines, segments, overflow = browser.execute_script("""
            const code = arguments[0];
            const tops = new Set(Array.from(code.getClientRects()).map(r => Math.round(r.top)));
            const split = Array.from(code.querySelectorAll(".seg")).map(s => {
              const range = document.createRange();
              range.selectNodeContents(s);
              return new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top))).size;
            });
            const panel = code.closest("section").getBoundingClientRect();
            return [tops.size, split, code.getBoundingClientRect().right - panel.right];
        """, path)
        assert lines > 1, "the path did not need to wrap at this width; the check proves nothing"
        assert all(n == 1 for n in segments), f"a folder name wraps inside itself: {segments}"
        assert overflow <= 0, "the path runs out of its panel"
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_errors_show_sizes_not_raw_bytes(server, browser):
    vm = server.get(f"/api/v1/vms/{_vm_in(server, 'Off')['id']}")
    _open_vm(browser, server, vm)
    wait(browser, lambda d: d.find_element(By.ID, "edit-vm").is_enabled())
    browser.find_element(By.ID, "edit-vm").click()
    box = wait(browser, lambda d: d.find_element(By.ID, "edit-memory"))
    box.clear()
    box.send_keys("4097")  # MiB: not a multiple of 2 MiB, refused by the server in bytes
    browser.find_element(By.ID, "edit-dialog-submit").click()
    error = wait(browser, lambda d: d.find_element(By.ID, "edit-dialog-error").text)
    assert "4,097 MiB" in error, error
    assert not re.search(r"\d{5,}", error), f"raw bytes in {error!r}"
    browser.find_element(By.ID, "edit-dialog-cancel").click()


def test_a_job_of_a_deleted_vm_names_it_without_a_dead_link(server, browser):
    name = "ui-gone-" + secrets.token_hex(2)
    created = _wait_job(server, _provision(server, name))
    assert created["status"] == "succeeded", created.get("error")
    vm_id = created["vm_id"]
    deleted = server.post("/api/v1/vms/delete", {"vm_id": vm_id, "force": True, "delete_disks": True})
    assert _wait_job(server, deleted["job_id"])["status"] == "succeeded"

    go(browser, server, "#/jobs")
    browser.refresh()
    cell = f'tr[data-job-id="{created["id"]}"] td:nth-child(3)'
    # Rows re-render live: read the cell in one step.
    read = "const c = document.querySelector(arguments[0]); return c && [c.textContent, c.querySelectorAll('a').length];"
    text, links = wait(browser, lambda d: (lambda r: r if r and "(deleted)" in r[0] else None)(d.execute_script(read, cell)),
                       message="the job of the deleted VM is not marked")
    assert name in text and links == 0, (text, links)

    go(browser, server, f"#/jobs/{created['id']}")
    vm_cell = wait(browser, lambda d: css(d, "#job-vm-link.vm-gone") and d.find_element(By.ID, "job-vm-link"))
    assert vm_cell.tag_name == "span" and name in vm_cell.text
    assert not css(browser, "#job-header a[href^='#/vms/']")


def test_toasts_do_not_cover_the_last_log_line(server, browser):
    vm = _vm_in(server, "Off")
    _open_vm(browser, server, vm)
    # The VM panel re-renders on live events: find the enabled button and click it in one step.
    wait(browser, lambda d: d.execute_script(
        "const b = document.querySelector('button[data-action=\"start\"]');"
        " if (!b || b.disabled) return false; b.click(); return true;"))
    try:
        wait(browser, lambda d: "#/jobs/" in d.current_url)
    except TimeoutException:
        toasts = " | ".join(t.text for t in css(browser, ".toast"))
        banner = browser.find_element(By.ID, "banner").text
        jobs = server.get("/api/v1/jobs?limit=5&vm_id=" + vm["id"])
        raise AssertionError(f"Start did not open the job page: banner {banner!r}, toasts {toasts!r}, "
                             f"jobs of the VM: {jobs}")
    job_id = browser.current_url.split("#/jobs/", 1)[1]
    wait(browser, lambda d: len(css(d, "#job-log li")) > 0)
    # Bring the newest log line to the bottom right of the window, where toasts appear.
    browser.execute_script("document.querySelector('#job-log li:last-child').scrollIntoView({block: 'end'})")
    time.sleep(0.3)
    covered = browser.execute_script("""
        const line = document.querySelector("#job-log li:last-child").getBoundingClientRect();
        const toasts = Array.from(document.querySelectorAll(".toast"));
        return [toasts.length, toasts.some(t => {
          const r = t.getBoundingClientRect();
          return r.left < line.right && r.right > line.left && r.top < line.bottom && r.bottom > line.top;
        })];
    """)
    assert covered[0] >= 1, "no toast was showing; the check proves nothing"
    assert not covered[1], "a toast covers the last log line"
    _wait_job(server, job_id)
