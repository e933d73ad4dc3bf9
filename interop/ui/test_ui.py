"""The web UI in a real browser against the real server binary in demo mode.

The tests run in file order and share one server: the overview and the table see the untouched
demo fleet first, then a VM is created, powered, and deleted through the UI.
"""

import json
import secrets
import time

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

JOB_TIMEOUT = 90
FINISHED = ("succeeded", "failed", "cancelled")
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVpLXRlc3Qta2V5LW5vdC1hLXJlYWwta2V5LWF0LWFsbA ui-test"


def wait(driver, condition, timeout=20, message=""):
    # Live updates re-render rows and panels, so an element found a moment ago may be gone.
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def go(driver, server, route):
    driver.get(f"{server.base}/{route}")


def css(driver, selector):
    return driver.find_elements(By.CSS_SELECTOR, selector)


def js_errors(driver):
    """Script errors in the browser console; failed requests the UI reports itself are not."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


def job_ids(server):
    return {job["id"] for job in server.get("/api/v1/jobs?limit=1000")["jobs"]}


def pick_host_and_image(server, family):
    """A connected host and one of its images of `family` (`linux` or `windows`)."""
    for host in server.get("/api/v1/hosts")["hosts"]:
        if host["status"] != "connected":
            continue
        facts = server.get(f"/api/v1/hosts/{host['name']}").get("facts") or {}
        for image in facts.get("images") or []:
            if image.get("os_family") == family:
                return host["name"], image["name"]
    raise AssertionError(f"no connected demo host offers a {family} image")


def fill_create_form(driver, server, host, image, name):
    go(driver, server, "#/create")
    driver.refresh()  # a fresh, empty form even when the page already showed one
    wait(driver, lambda d: len(Select(d.find_element(By.ID, "f-hyperv_host")).options) > 1,
         message="host picker never filled")
    Select(driver.find_element(By.ID, "f-hyperv_host")).select_by_value(host)
    wait(driver, lambda d: any(o.get_attribute("value") == image
                               for o in Select(d.find_element(By.ID, "f-image_name")).options),
         message=f"image {image!r} never offered for {host}")
    Select(driver.find_element(By.ID, "f-image_name")).select_by_value(image)
    fields = {"f-vm_name": name, "f-gb_ram": "2", "f-cpu_cores": "1",
              "f-guest_la_uid": "uiadmin", "f-guest_la_pw": "S3cret-ui-pw!"}
    for field_id, value in fields.items():
        box = driver.find_element(By.ID, field_id)
        box.clear()
        box.send_keys(value)


def submit_create(driver):
    button = driver.find_element(By.ID, "create-submit")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


def follow_job(driver, screenshot=None):
    """Waits on the job page until the job ends; returns the job id."""
    wait(driver, lambda d: "#/jobs/" in d.current_url, message="the UI did not open the job page")
    job_id = driver.current_url.split("#/jobs/", 1)[1]
    badge = "#job-status-line [data-status]"

    def finished(d):
        found = css(d, badge)
        return found and found[0].get_attribute("data-status") in FINISHED

    wait(driver, finished, timeout=JOB_TIMEOUT, message=f"job {job_id} did not finish on the page")
    status = css(driver, badge)[0].get_attribute("data-status")
    error = "".join(e.text for e in css(driver, "#job-error"))
    assert status == "succeeded", f"job {job_id} ended {status}: {error}"
    # The progress bar reached the end and the page shows the steps and the log it streamed.
    # (read again when a live update re-rendered the header in between)
    wait(driver, lambda d: css(d, "#job-header [role=progressbar]")[0].get_attribute("aria-valuenow") == "100",
         timeout=5, message="the progress bar of the finished job is not at 100")
    assert css(driver, "#job-steps li[data-step]"), "no step in the timeline"
    wait(driver, lambda d: len(css(d, "#job-log li")) > 0, message="no log line streamed")
    assert not css(driver, "#job-cancel"), "a finished job still offers Cancel"
    if screenshot:
        screenshot(driver, "job-detail")
    return job_id


def vm_state(driver):
    found = css(driver, "#vm-status [data-state]")
    return found[0].get_attribute("data-state") if found else None


def test_overview_shows_the_demo_fleet(server, browser, screenshot):
    clusters = server.get("/api/v1/clusters")["clusters"]
    hosts = server.get("/api/v1/hosts")["hosts"]
    status = server.get("/api/v1/status")
    assert (len(clusters), len(hosts), status["vms"]) == (2, 5, 40), "unexpected demo fleet"

    go(browser, server, "")
    wait(browser, lambda d: len(css(d, "section.cluster")) == 2, message="clusters not shown")
    shown = {e.get_attribute("data-cluster") for e in css(browser, "section.cluster")}
    assert shown == {c["name"] for c in clusters}
    for host in hosts:
        block = css(browser, f'.host[data-host="{host["name"]}"]')
        assert block, f"host {host['name']} missing"
        assert block[0].find_element(By.CSS_SELECTOR, "[data-host-status]").text == host["status"]
        assert "Memory" in block[0].text and "Storage" in block[0].text
        assert len(block[0].find_elements(By.CSS_SELECTOR, ".bar")) == 2
    assert browser.find_element(By.ID, "total-vms").text == "40"
    assert browser.find_element(By.ID, "total-hosts").text.endswith("/ 5")
    assert "demo" in browser.find_element(By.ID, "mode").text
    screenshot(browser, "overview")

    # The first Tab reaches the skip link, which moves focus to the main content.
    go(browser, server, "#/jobs")
    browser.refresh()
    wait(browser, lambda d: css(d, "main h1"))
    ActionChains(browser).send_keys(Keys.TAB).perform()
    active = browser.switch_to.active_element
    assert "skip-link" in (active.get_attribute("class") or "")
    active.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    assert js_errors(browser) == []


def test_vm_table_sorts_and_filters(server, browser, screenshot):
    go(browser, server, "#/vms")
    rows = "#vm-table tbody tr[data-vm-id]"
    wait(browser, lambda d: len(css(d, rows)) == 40, message="the table does not list 40 VMs")
    screenshot(browser, "vms")

    # Sorting by keyboard: the name header's button toggles to descending.
    name_header = browser.find_element(By.CSS_SELECTOR, 'button[data-sort="name"]')
    name_header.send_keys(Keys.ENTER)
    th = browser.find_element(By.CSS_SELECTOR, 'th[data-key="name"]')
    assert th.get_attribute("aria-sort") == "descending"

    def names(d):
        return [r.get_attribute("data-vm-name") for r in css(d, rows)]

    wait(browser, lambda d: len(names(d)) == 40 and names(d) == sorted(names(d), key=str.lower, reverse=True),
         message="rows not sorted by name, descending")
    browser.find_element(By.CSS_SELECTOR, 'button[data-sort="processor_count"]').click()
    assert browser.find_element(By.CSS_SELECTOR, 'th[data-key="processor_count"]').get_attribute("aria-sort") == "ascending"

    def cpus(d):
        return [int(r.find_elements(By.CSS_SELECTOR, "td.num")[0].text) for r in css(d, rows)]

    wait(browser, lambda d: cpus(d) == sorted(cpus(d)), message="rows not sorted by CPUs")

    # The state filter is sent to the server; every row shown has that state.
    running = server.get("/api/v1/vms?state=Running")["total"]
    Select(browser.find_element(By.ID, "filter-state")).select_by_value("Running")
    wait(browser, lambda d: len(css(d, rows)) == running, message="state filter not applied")
    assert {b.get_attribute("data-state") for b in css(browser, f"{rows} [data-state]")} <= {"Running"}
    Select(browser.find_element(By.ID, "filter-state")).select_by_value("")

    # The text filter (q) narrows to one VM by its exact name.
    target = server.get("/api/v1/vms")["vms"][3]
    expected = {v["id"] for v in server.get(f"/api/v1/vms?q={target['name']}")["vms"]}
    box = browser.find_element(By.ID, "filter-q")
    box.send_keys(target["name"])
    wait(browser, lambda d: {r.get_attribute("data-vm-id") for r in css(d, rows)} == expected,
         message="text filter not applied")
    assert "q=" in browser.current_url
    assert js_errors(browser) == []


def test_create_form_shows_field_errors_without_submitting(server, browser, screenshot):
    host, image = pick_host_and_image(server, "linux")
    before = job_ids(server)
    fill_create_form(browser, server, host, image, "bad_name")
    values = {"f-guest_v4_ipaddr": "10.0.0.300", "f-guest_v4_cidrprefix": "24",
              "f-guest_v4_defaultgw": "10.0.0.1", "f-guest_v4_dns1": "10.0.0.2"}
    for field_id, value in values.items():
        browser.find_element(By.ID, field_id).send_keys(value)
    assert browser.find_element(By.ID, "f-guest_la_pw").get_attribute("type") == "password"
    submit_create(browser)

    ip_error = wait(browser, lambda d: d.find_element(By.ID, "err-guest_v4_ipaddr").text,
                    message="no field error for the bad IP address")
    assert "IPv4" in ip_error
    ip_box = browser.find_element(By.ID, "f-guest_v4_ipaddr")
    assert ip_box.get_attribute("aria-invalid") == "true"
    assert "err-guest_v4_ipaddr" in ip_box.get_attribute("aria-describedby").split()
    assert browser.find_element(By.ID, "err-vm_name").text, "no field error for the bad VM name"
    assert browser.find_element(By.ID, "err-guest_v4_defaultgw").text == ""
    # Focus moved to the first invalid field; nothing was submitted.
    assert browser.switch_to.active_element.get_attribute("id") == "f-vm_name"
    assert browser.current_url.endswith("#/create")
    screenshot(browser, "create-vm")
    time.sleep(1)
    assert job_ids(server) == before, "a job was created despite the field errors"

    # A gateway outside the subnet is refused too, next to the gateway field.
    for field_id, value in (("f-vm_name", "ui-bad-gw"), ("f-guest_v4_ipaddr", "10.0.0.30"),
                            ("f-guest_v4_defaultgw", "10.0.9.1")):
        box = browser.find_element(By.ID, field_id)
        box.clear()
        box.send_keys(value)
    submit_create(browser)
    wait(browser, lambda d: "inside 10.0.0.0/24" in d.find_element(By.ID, "err-guest_v4_defaultgw").text,
         message="no field error for the gateway outside the subnet")
    assert browser.find_element(By.ID, "err-guest_v4_ipaddr").text == ""
    assert browser.find_element(By.ID, "err-vm_name").text == ""
    time.sleep(1)
    assert job_ids(server) == before
    assert js_errors(browser) == []


def test_create_with_existing_name_shows_the_server_error(server, browser):
    host, image = pick_host_and_image(server, "linux")
    taken = next(v["name"] for v in server.get(f"/api/v1/vms?host={host}")["vms"]
                 if len(v["name"]) <= 15)
    before = job_ids(server)
    fill_create_form(browser, server, host, image, taken)
    submit_create(browser)
    message = wait(browser, lambda d: d.find_element(By.ID, "err-vm_name").text,
                   message="the server's 409 was not shown next to the VM name")
    assert browser.find_element(By.ID, "f-vm_name").get_attribute("aria-invalid") == "true"
    assert message, "empty error"
    assert browser.current_url.endswith("#/create")
    assert job_ids(server) == before


def test_vm_lifecycle_through_the_ui(server, browser, screenshot):
    host, image = pick_host_and_image(server, "linux")
    name = "ui-" + secrets.token_hex(3)

    # Create, with the Linux-only SSH group (the Windows domain group is hidden).
    fill_create_form(browser, server, host, image, name)
    assert browser.find_element(By.ID, "group-domain").get_attribute("hidden") is not None
    assert browser.find_element(By.ID, "group-ssh").is_displayed()
    browser.find_element(By.ID, "f-cnf_ansible_ssh_user").send_keys("ansible")
    browser.find_element(By.ID, "f-cnf_ansible_ssh_key").send_keys(SSH_KEY)
    browser.find_element(By.ID, "f-vlan_id").send_keys("20")
    submit_create(browser)
    create_job = follow_job(browser, screenshot)
    job = server.get(f"/api/v1/jobs/{create_job}")
    assert job["type"] == "provision" and job["vm_name"] == name
    page_text = browser.find_element(By.TAG_NAME, "body").text
    assert "S3cret-ui-pw!" not in page_text, "a password is shown on the job page"

    # The job list shows it finished.
    go(browser, server, "#/jobs")
    wait(browser, lambda d: css(d, f'#job-table tr[data-job-id="{create_job}"][data-status="succeeded"]'),
         message="the finished job is not in the job list")
    screenshot(browser, "jobs")

    # The new VM is in the table; its row leads to the detail page.
    go(browser, server, "#/vms")
    wait(browser, lambda d: css(d, f'#vm-table tr[data-vm-name="{name}"]'), timeout=30,
         message="the new VM is not in the table")
    link = css(browser, f'#vm-table tr[data-vm-name="{name}"] a.vm-link')[0]
    vm_id = css(browser, f'#vm-table tr[data-vm-name="{name}"]')[0].get_attribute("data-vm-id")
    link.click()
    wait(browser, lambda d: css(d, "#vm-name") and d.find_element(By.ID, "vm-name").text == name)
    wait(browser, lambda d: vm_state(d) is not None)
    screenshot(browser, "vm-detail")

    # Power: turn it off and start it again (or the other way round), each a job that succeeds.
    first = "stop" if vm_state(browser) == "Running" else "start"
    for action in (first, "start" if first == "stop" else "stop"):
        expected = "Off" if action == "stop" else "Running"
        button = f'button[data-action="{action}"]'
        wait(browser, lambda d: css(d, button) and css(d, button)[0].is_enabled(), timeout=30,
             message=f"{action} never enabled")
        allowed = server.get(f"/api/v1/vms/{vm_id}")["allowed_actions"]
        for other in css(browser, "button[data-action]"):
            assert other.is_enabled() == (other.get_attribute("data-action") in allowed), \
                f"{other.get_attribute('data-action')} enabled state differs from allowed_actions"
        css(browser, button)[0].click()
        if action == "stop":
            # Turn off loses the guest's unsaved work: the UI asks first.
            wait(browser, lambda d: d.find_element(By.ID, "confirm-dialog").is_displayed())
            browser.find_element(By.ID, "confirm-ok").click()
        follow_job(browser)
        go(browser, server, f"#/vms/{vm_id}")
        try:
            wait(browser, lambda d: vm_state(d) == expected, timeout=30)
        except TimeoutException:
            raise AssertionError(f"after {action} the state badge shows {vm_state(browser)}, not {expected}")

    # Delete through the confirmation dialog, which wants the VM's name typed.
    wait(browser, lambda d: css(d, "#delete-vm") and d.find_element(By.ID, "delete-vm").is_enabled(),
         timeout=30, message="delete never enabled")
    browser.find_element(By.ID, "delete-vm").click()
    dialog = wait(browser, lambda d: d.find_element(By.ID, "delete-dialog").get_attribute("open") is not None
                  and d.find_element(By.ID, "delete-dialog"))
    assert name in dialog.find_element(By.ID, "delete-title").text
    submit = browser.find_element(By.ID, "delete-submit")
    assert not submit.is_enabled()
    confirm = browser.find_element(By.ID, "delete-confirm")
    confirm.send_keys(name + "x")
    assert not submit.is_enabled(), "delete enabled with a wrong name"
    confirm.send_keys(Keys.BACKSPACE)
    if browser.find_element(By.ID, "delete-force-field").is_displayed():
        # A VM that is not Off needs Force, offered in the dialog.
        assert not submit.is_enabled(), "delete enabled for a running VM without Force"
        browser.find_element(By.ID, "delete-force").click()
    assert submit.is_enabled()
    browser.find_element(By.ID, "delete-disks").click()
    submit.click()
    delete_job = follow_job(browser)
    assert server.get(f"/api/v1/jobs/{delete_job}")["type"] == "delete"

    go(browser, server, f"#/vms?q={name}")
    wait(browser, lambda d: "No VMs match" in d.find_element(By.ID, "vm-table").text, timeout=30,
         message="the deleted VM is still in the table")
    assert server.get(f"/api/v1/vms?q={name}")["total"] == 0
    assert js_errors(browser) == []


def test_live_updates_from_the_event_stream(server, browser):
    """Rows appear and change through /api/v1/events without reloading the page."""
    host, image = pick_host_and_image(server, "linux")
    name = "live-" + secrets.token_hex(3)
    go(browser, server, f"#/vms?q={name}")
    browser.refresh()
    wait(browser, lambda d: "No VMs match" in d.find_element(By.ID, "vm-table").text)
    body = {"vm_name": name, "hyperv_host": host, "image_name": image, "gb_ram": 1,
            "cpu_cores": 1, "guest_la_uid": "uiadmin", "guest_la_pw": "S3cret-ui-pw!"}
    job_id = server.post("/api/v1/vms/create", body)["job_id"]
    wait(browser, lambda d: css(d, f'#vm-table tr[data-vm-name="{name}"]'), timeout=JOB_TIMEOUT,
         message="the VM created through the API never appeared live")

    # The job list follows the job events live too.
    go(browser, server, "#/jobs")
    wait(browser, lambda d: css(d, f'#job-table tr[data-job-id="{job_id}"]'))
    vm_id = None
    deadline = time.monotonic() + JOB_TIMEOUT
    while vm_id is None and time.monotonic() < deadline:
        job = server.get(f"/api/v1/jobs/{job_id}")
        if job["status"] in FINISHED:
            assert job["status"] == "succeeded", job.get("error")
            vm_id = job["vm_id"]
        else:
            time.sleep(0.3)
    assert vm_id, "the provisioning job did not finish"
    stop_job = server.post(f"/api/v1/vms/{vm_id}/actions/stop", {})["job_id"]
    wait(browser, lambda d: css(d, f'#job-table tr[data-job-id="{stop_job}"][data-status="succeeded"]'),
         timeout=JOB_TIMEOUT, message="the power job's progress never reached the list live")
    delete_job = server.post("/api/v1/vms/delete", {"vm_id": vm_id, "force": True, "delete_disks": True})["job_id"]
    wait(browser, lambda d: css(d, f'#job-table tr[data-job-id="{delete_job}"][data-status="succeeded"]'),
         timeout=JOB_TIMEOUT, message="the delete job never reached the list live")
    assert js_errors(browser) == []


def _stub_fetch(browser, stub):
    """Installs a fetch() wrapper into every new document: `stub` is JavaScript that may return
    a canned Response for `url` (a URL) and `method`, else the real request is made."""
    source = """(() => {
      const real = window.fetch.bind(window);
      const json = (status, body) => Promise.resolve(new Response(JSON.stringify(body),
        {status, headers: {"Content-Type": "application/json"}}));
      window.fetch = (input, init) => {
        const url = new URL(typeof input === "string" ? input : input.url, location.href);
        const method = (init && init.method) || "GET";
        %s
        return real(input, init);
      };
    })();""" % stub
    return browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})["identifier"]


def test_refresh_all_hosts_reads_every_host_and_names_those_that_fail(server, browser):
    hosts = server.get("/api/v1/hosts")["hosts"]
    before = {h["name"]: h["last_seen"] for h in hosts if h["status"] == "connected"}
    go(browser, server, "")
    browser.refresh()

    def click(d):
        found = css(d, "#refresh-all")
        if not found or not found[0].is_enabled():
            return False
        found[0].click()
        return True

    def toast(d, words):
        return next((e for e in css(d, "#toasts .toast") if words in e.text), None)

    wait(browser, click, message="no Refresh all hosts button")
    done = wait(browser, lambda d: toast(d, "answer"), timeout=60,
                message="no toast after Refresh all hosts")
    down = [h["name"] for h in hosts if h["status"] != "connected"]
    if down:  # a host of the demo that is down stays down and is named
        assert done.text.startswith(f"{len(down)} of {len(hosts)} hosts did not answer: "), done.text
        assert all(name in done.text for name in down[:3]), (down, done.text)
    else:
        assert done.text.startswith(f"All {len(hosts)} hosts answered ("), done.text
    after = {h["name"]: h["last_seen"] for h in server.get("/api/v1/hosts")["hosts"]}
    assert all(after[name] != seen for name, seen in before.items()), (before, after)
    wait(browser, lambda d: css(d, "#refresh-all") and css(d, "#refresh-all")[0].is_enabled(),
         message="the button stays disabled after the refresh")

    # Hosts that fail are named with their reasons (the first three), the rest counted; an
    # answer after the server's wait says the refreshes go on.
    failed = [{"host": f"hv0{i}", "error": f"reason {i}"} for i in range(1, 5)]
    for complete, down, words in (
            (True, failed, "4 of 5 hosts did not answer: hv01 (reason 1); hv02 (reason 2); "
                           "hv03 (reason 3) and 1 more"),
            (False, failed[:1], "Still refreshing after 120.0 s (the refreshes go on); "
                                "not connected so far: hv01 (reason 1)"),
            # Every host was connected when the server stopped waiting: still not a success.
            (False, [], "Still refreshing after 120.0 s (the refreshes go on)")):
        script = _stub_fetch(browser, """
            if (url.pathname === "/api/v1/inventory/refresh" && method === "POST")
              return json(%d, {hosts: 5, connected: %d, failed: %s, took_ms: 120000, complete: %s});
            """ % (200 if complete else 202, 5 - len(down), json.dumps(down),
                   "true" if complete else "false"))
        try:
            browser.refresh()
            wait(browser, click, message="no Refresh all hosts button")
            shown = wait(browser, lambda d: next((e for e in css(d, "#toasts .toast") if e.text == words), None),
                         message=f"no toast {words!r}")
            assert "error" in shown.get_attribute("class"), shown.get_attribute("class")
        finally:
            browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script})
    browser.refresh()
    assert js_errors(browser) == []


def test_roles_and_auth_errors_are_shown(server, browser):
    vm = next(v for v in server.get("/api/v1/vms?state=Running")["vms"] if not v["busy_job"])
    me = ('{auth_enabled: true, subject: "u-1", name: "Rita <b>Reader</b>", role: "%s", '
          'login_url: "/oidc/login", logout_url: "/oidc/logout"}')

    # A reader sees the VM but no enabled control that changes anything.
    script = _stub_fetch(browser, 'if (url.pathname === "/api/v1/me") return json(200, %s);' % (me % "reader"))
    try:
        go(browser, server, f"#/vms/{vm['id']}")
        browser.refresh()
        wait(browser, lambda d: vm_state(d) == "Running")
        assert browser.find_element(By.ID, "user-name").text == "Rita <b>Reader</b>"  # as text
        assert browser.find_element(By.ID, "user-role").text == "reader"
        assert browser.find_element(By.ID, "sign-out").get_attribute("href").endswith("/oidc/logout")
        assert all(not b.is_enabled() for b in css(browser, "button[data-action], #delete-vm"))
        assert not browser.find_element(By.CSS_SELECTOR, '[data-nav="create"]').is_displayed()
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script})

    # A 403 from the server is shown in the banner with the server's message.
    script = _stub_fetch(browser, """
        if (url.pathname === "/api/v1/me") return json(200, %s);
        if (method === "POST") return json(403, {error: {code: "forbidden", message: "role writer is not enough here"}});
        """ % (me % "writer"))
    try:
        go(browser, server, f"#/vms/{vm['id']}")
        browser.refresh()
        button = 'button[data-action="save"]'
        wait(browser, lambda d: css(d, button) and css(d, button)[0].is_enabled())
        css(browser, button)[0].click()
        banner = wait(browser, lambda d: d.find_element(By.ID, "banner").is_displayed() and d.find_element(By.ID, "banner"))
        assert "Permission denied: role writer is not enough here" in banner.text
        assert f"#/vms/{vm['id']}" in browser.current_url
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script})

    # Not signed in: a Sign in link to login_url, and a 401 answer offers it again.
    script = _stub_fetch(browser, """
        if (url.pathname === "/api/v1/me") return json(200, {auth_enabled: true, subject: null, name: null,
            role: null, login_url: "/oidc/login", logout_url: null});
        if (url.pathname.startsWith("/api/v1/")) return json(401, {error: {code: "unauthenticated", message: "no token"}});
        """)
    try:
        go(browser, server, "")
        browser.refresh()
        banner = wait(browser, lambda d: d.find_element(By.ID, "banner").is_displayed() and d.find_element(By.ID, "banner"))
        assert "no token" in banner.text
        links = css(browser, "#sign-in")
        assert links and all("/oidc/login" in a.get_attribute("href") for a in links)
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script})
    browser.refresh()


def test_phone_width(server, browser, screenshot):
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        go(browser, server, "")
        browser.refresh()
        wait(browser, lambda d: len(css(d, "section.cluster")) == 2)
        width = browser.execute_script("return window.innerWidth")
        assert width == 390
        # Nothing makes the page scroll sideways; wide tables scroll inside their own box.
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        screenshot(browser, "overview-phone")
        go(browser, server, "#/vms")
        wait(browser, lambda d: len(css(d, "#vm-table tbody tr[data-vm-id]")) > 0)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        wrap = browser.find_element(By.CSS_SELECTOR, ".table-wrap")
        assert browser.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", wrap)
        screenshot(browser, "vms-phone")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_create_in_a_cluster_with_network_storage_class_and_disk_size(server, browser, screenshot):
    """The create form's placement and host-resource fields reach the server, which places the
    VM on the only member that defines the network and the storage class; the job page lists
    the cleanup steps and the overview's Refresh button refreshes a host."""
    cluster = server.get("/api/v1/hosts/hv03")["cluster"]
    assert cluster, "the demo's hv03 is a cluster member"
    image = next(i for i in server.get("/api/v1/hosts/hv03")["facts"]["images"]
                 if i.get("os_family") == "linux")
    disk_gb = image["max_size_bytes"] // (1 << 30) + 8
    name = "ui-cl-" + secrets.token_hex(3)

    go(browser, server, "#/create")
    browser.refresh()
    wait(browser, lambda d: any(o.get_attribute("value") == cluster
                                for o in Select(d.find_element(By.ID, "f-target_cluster")).options),
         message="cluster picker never filled")
    Select(browser.find_element(By.ID, "f-target_cluster")).select_by_value(cluster)
    # A cluster placement disables the host picker and makes the VM a cluster role.
    assert not browser.find_element(By.ID, "f-hyperv_host").is_enabled()
    assert browser.find_element(By.ID, "f-vm_clustered").is_selected()
    wait(browser, lambda d: any(o.get_attribute("value") == image["name"]
                                for o in Select(d.find_element(By.ID, "f-image_name")).options),
         message="the cluster's images were never offered")
    Select(browser.find_element(By.ID, "f-image_name")).select_by_value(image["name"])
    fields = {"f-vm_name": name, "f-gb_ram": "2", "f-cpu_cores": "1",
              "f-guest_la_uid": "uiadmin", "f-guest_la_pw": "S3cret-ui-pw!",
              "f-network": "prod", "f-storage_class": "fast", "f-disk_size_gb": str(disk_gb)}
    for field_id, value in fields.items():
        box = browser.find_element(By.ID, field_id)
        box.clear()
        box.send_keys(value)
    submit_create(browser)
    job_id = follow_job(browser, screenshot)
    job = server.get(f"/api/v1/jobs/{job_id}")
    assert job["target_host"] == "hv03", job["target_host"]
    assert job["parameters"]["placement"]["cluster"] == cluster
    values = job["parameters"].get("values", job["parameters"])
    assert values.get("network") == "prod" and values.get("storage_class") == "fast", values
    # Live updates re-render the timeline; `wait` retries a read that raced a re-render.
    steps = wait(browser, lambda d: [e.get_attribute("data-step")
                                     for e in css(d, "#job-steps li[data-step]")])
    for step in ("Provisioning.RemoveProvisioningKeys", "Provisioning.RemoveDvdDrive",
                 "Provisioning.RemoveProvisioningISO", "Provisioning.MarkProvisioned"):
        assert step in steps, f"{step} missing from the timeline {steps}"
    vm = server.get(f"/api/v1/vms/{job['vm_id']}")
    assert vm["dvd_drives"] == [] and vm["orphaned"] is False, vm

    # An unknown network is refused by the server; the form shows it on the field.
    fill_create_form(browser, server, "hv03", image["name"], "ui-bad-" + secrets.token_hex(3))
    browser.find_element(By.ID, "f-network").send_keys("dmz")
    submit_create(browser)
    wait(browser, lambda d: "dmz" in " ".join(e.text for e in css(d, ".field-error, [role=alert]")),
         message="the 422 on network is not shown")

    # The overview's Refresh button refreshes one host.
    go(browser, server, "")
    browser.refresh()
    before = server.get("/api/v1/hosts/hv03")["last_seen"]

    def click_refresh(d):
        found = css(d, 'button[data-refresh-host="hv03"]')
        if not found or not found[0].is_enabled():
            return False
        found[0].click()
        return True

    wait(browser, click_refresh, message="no Refresh button for hv03")
    wait(browser, lambda d: server.get("/api/v1/hosts/hv03")["last_seen"] != before, timeout=30,
         message="the refresh did not reach the host")
    assert js_errors(browser) == []
