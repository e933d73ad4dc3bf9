"""The host page and the Maintenance page in a real browser against the demo server.

A clustered demo host is drained from its page (Enter maintenance): the page follows the drain
live, VM by VM, and ends in maintenance; Resume with failback brings it back. The Maintenance
page lists the hosts' states, starts a maintenance run, shows each host's log and cancels the
run.
"""

import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from test_ui import css, go, js_errors, wait

TIMEOUT = 120


def state_of(browser):
    found = css(browser, "#host-page [data-maintenance-state]")
    return found[0].get_attribute("data-maintenance-state") if found else None


def clustered_host(server):
    """The last host of a cluster with another member, with at least one clustered VM."""
    hosts = server.get("/api/v1/hosts")["hosts"]
    for host in reversed(hosts):
        peers = [h for h in hosts if h["cluster"] and h["cluster"] == host["cluster"]]
        if len(peers) > 1 and host["vm_count"] > 0:
            return host["name"]
    raise AssertionError(f"no clustered host with VMs in {hosts}")


def wait_job_done(server, job_type, host):
    def done(_):
        jobs = server.get(f"/api/v1/jobs?host={host}&type={job_type}&limit=1")["jobs"]
        return jobs and jobs[0]["status"] in ("succeeded", "failed", "cancelled") and jobs[0]

    return done


def test_drain_and_resume_from_the_host_page(server, browser, screenshot):
    host = clustered_host(server)
    go(browser, server, f"#/hosts/{host}")
    browser.refresh()
    wait(browser, lambda d: css(d, "#host-vms tbody tr"), message="the host page shows no VMs")
    assert state_of(browser) == "active"
    assert css(browser, "#host-page .cap"), "no capacity bars"

    browser.find_element(By.ID, "enter-maintenance").click()
    wait(browser, lambda d: css(d, "#maintenance-dialog[open]"), message="the dialog never opened")
    Select(browser.find_element(By.ID, "mnt-evacuate")).select_by_value("live")
    browser.find_element(By.ID, "mnt-reason").send_keys("ui drain")
    browser.find_element(By.ID, "mnt-ticket").send_keys("CHG-UI-1")
    browser.find_element(By.ID, "maintenance-dialog-submit").click()
    wait(browser, lambda d: not css(d, "#maintenance-dialog[open]"), message="the dialog stayed open")

    # The page follows the drain and ends with every VM's fate listed.
    wait(browser, lambda d: state_of(d) in ("maintenance", "failed_drain"), timeout=TIMEOUT,
         message="the host never left draining on its page")
    wait(browser, lambda d: css(d, "#drain-progress tbody tr[data-vm]"), timeout=TIMEOUT,
         message="no per-VM progress shown")
    rows = {r.get_attribute("data-vm"): r.find_element(By.CSS_SELECTOR, ".disposition").text
            for r in css(browser, "#drain-progress tbody tr[data-vm]")}
    assert any(v == "moved by the cluster" for v in rows.values()), rows
    detail = server.get(f"/api/v1/hosts/{host}")
    assert detail["maintenance"]["ticket"] == "CHG-UI-1"
    assert detail["maintenance_state"] == state_of(browser)
    screenshot(browser, "host-page-maintenance")

    browser.find_element(By.ID, "resume-host").click()
    wait(browser, lambda d: css(d, "#resume-dialog[open]"), message="the resume dialog never opened")
    assert browser.find_element(By.ID, "resume-failback").is_selected()
    browser.find_element(By.ID, "resume-dialog-submit").click()
    wait(browser, wait_job_done(server, "resume", host), timeout=TIMEOUT, message="the resume never ended")
    browser.refresh()
    wait(browser, lambda d: state_of(d) == "active", timeout=TIMEOUT, message="the host is not active again")
    assert not js_errors(browser), js_errors(browser)


def test_maintenance_page_runs_show_per_host_logs_and_cancel(server, browser, screenshot):
    go(browser, server, "#/maintenance")
    browser.refresh()
    wait(browser, lambda d: css(d, "#maintenance-hosts tbody tr"), message="no hosts listed")
    hosts = [r.get_attribute("data-host") for r in css(browser, "#maintenance-hosts tbody tr")]
    target = hosts[0]

    wait(browser, lambda d: css(d, f"#run-host-{target}"), message="the run form is missing")
    browser.find_element(By.ID, f"run-host-{target}").click()
    Select(browser.find_element(By.ID, "run-evacuate")).select_by_value("none")
    browser.find_element(By.ID, "run-reason").send_keys("ui run")
    browser.find_element(By.ID, "run-start").click()

    # The run shows the host in maintenance with its log.
    row = f"#runs .run tbody tr[data-run-host='{target}'] [data-run-status]"
    wait(browser, lambda d: css(d, row) and css(d, row)[0].get_attribute("data-run-status") == "in_maintenance",
         timeout=TIMEOUT, message="the run's host never reached in_maintenance")
    log = css(browser, f"#runs .run details[data-host-log='{target}']")[0]
    browser.execute_script("arguments[0].open = true", log)
    assert "drain" in log.text, log.text
    screenshot(browser, "maintenance-page-run")

    cancel = css(browser, "#runs .run .cancel-run")[0]
    cancel.click()
    browser.switch_to.alert.accept()
    status = "#runs .run .head-row [data-status]"
    wait(browser, lambda d: css(d, status) and css(d, status)[0].get_attribute("data-status") == "cancelled",
         timeout=TIMEOUT, message="the run was not cancelled")

    # Put the host back for the other tests.
    server.post(f"/api/v1/hosts/{target}/resume", {"failback": False})
    deadline = time.monotonic() + TIMEOUT
    while server.get(f"/api/v1/hosts/{target}")["maintenance_state"] != "active":
        assert time.monotonic() < deadline, "the host did not come back"
        time.sleep(0.5)
    assert not js_errors(browser), js_errors(browser)
