"""Day-2 operations on the VM page in a real browser: the Edit dialog, the Disks actions (add,
expand, detach with the VM's name typed) and the console details. Each action follows its job
live on the job page; the API then shows the change.
"""

import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from test_ui import css, follow_job, go, js_errors, wait


def _off_vm(server):
    """A VM that is Off on a connected host, with no job working on it."""
    for vm in server.get("/api/v1/vms?state=Off")["vms"]:
        if not vm["stale"] and not vm["busy_job"]:
            return server.get(f"/api/v1/vms/{vm['id']}")
    raise AssertionError("the demo fleet has no VM that is Off")


def _open_vm(browser, server, vm):
    go(browser, server, f"#/vms/{vm['id']}")
    wait(browser, lambda d: css(d, "#vm-name") and d.find_element(By.ID, "vm-name").text == vm["name"])


def _click_when_enabled(browser, selector):
    wait(browser, lambda d: css(d, selector) and css(d, selector)[0].is_enabled(), timeout=30,
         message=f"{selector} never enabled")
    button = css(browser, selector)[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


def _set(browser, element_id, value):
    box = browser.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(value)


def test_edit_disks_and_console_through_the_ui(server, browser, screenshot):
    vm = _off_vm(server)
    vm_id = vm["id"]
    _open_vm(browser, server, vm)

    # Console details come from /console.
    wait(browser, lambda d: css(d, "#console-vmconnect"), message="no console details")
    assert browser.find_element(By.ID, "console-vmconnect").text == f"vmconnect.exe {vm['host']} -G {vm_id}"

    # Edit: processors and notes in one job.
    cpus = 1 if vm["processor_count"] != 1 else 2
    _click_when_enabled(browser, "#edit-vm")
    wait(browser, lambda d: d.find_element(By.ID, "edit-dialog").get_attribute("open") is not None)
    _set(browser, "edit-cpus", str(cpus))
    _set(browser, "edit-notes", "edited in the browser")
    browser.find_element(By.ID, "edit-dialog-submit").click()
    job = follow_job(browser, screenshot)
    assert server.get(f"/api/v1/jobs/{job}")["type"] == "edit"
    after = server.get(f"/api/v1/vms/{vm_id}")
    assert after["processor_count"] == cpus
    assert after["user_notes"] == "edited in the browser"

    # Add a 5 GiB dynamic disk.
    _open_vm(browser, server, vm)
    before = {d["id"] for d in after["disks"]}
    _click_when_enabled(browser, "#add-disk")
    wait(browser, lambda d: d.find_element(By.ID, "disk-add-dialog").get_attribute("open") is not None)
    _set(browser, "disk-size", "5")
    Select(browser.find_element(By.ID, "disk-type")).select_by_value("dynamic")
    browser.find_element(By.ID, "disk-add-dialog-submit").click()
    job = follow_job(browser)
    disk_id = server.get(f"/api/v1/jobs/{job}")["result"]["disk_id"]
    assert disk_id not in before
    assert any(d["id"] == disk_id for d in server.get(f"/api/v1/vms/{vm_id}/disks"))

    # Expand it to 8 GiB.
    _open_vm(browser, server, vm)
    _click_when_enabled(browser, f'li[data-disk="{disk_id}"] button[data-disk-action="expand"]')
    wait(browser, lambda d: d.find_element(By.ID, "disk-expand-dialog").get_attribute("open") is not None)
    _set(browser, "expand-size", "8")
    browser.find_element(By.ID, "disk-expand-dialog-submit").click()
    follow_job(browser)
    disk = next(d for d in server.get(f"/api/v1/vms/{vm_id}/disks") if d["id"] == disk_id)
    assert disk["max_size_bytes"] == 8 << 30

    # Detach and delete it: the dialog wants the VM's name typed.
    _open_vm(browser, server, vm)
    _click_when_enabled(browser, f'li[data-disk="{disk_id}"] button[data-disk-action="detach"]')
    wait(browser, lambda d: d.find_element(By.ID, "disk-detach-dialog").get_attribute("open") is not None)
    submit = browser.find_element(By.ID, "disk-detach-dialog-submit")
    assert not submit.is_enabled()
    browser.find_element(By.ID, "disk-detach-dialog-confirm").send_keys(vm["name"] + "x")
    assert not submit.is_enabled(), "detach enabled with a wrong name"
    _set(browser, "disk-detach-dialog-confirm", vm["name"])
    assert submit.is_enabled()
    browser.find_element(By.ID, "detach-delete").click()
    submit.click()
    job = follow_job(browser)
    result = server.get(f"/api/v1/jobs/{job}")["result"]
    assert result["deleted"] is True
    deadline = time.monotonic() + 10
    while any(d["id"] == disk_id for d in server.get(f"/api/v1/vms/{vm_id}/disks")):
        assert time.monotonic() < deadline, "the detached disk is still listed"
        time.sleep(0.2)
    assert js_errors(browser) == []
