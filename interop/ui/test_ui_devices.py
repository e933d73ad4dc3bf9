"""Network adapters and checkpoints on the VM page, in a real browser against the demo server.

Each action runs as a job the UI follows live on the job page; destructive ones (apply a
checkpoint, delete a checkpoint subtree, remove an adapter) want the VM's name typed first.
"""

import secrets

from selenium.webdriver.common.by import By

from test_ui import css, follow_job, go, js_errors, wait


def networked_vm(server):
    """A VM on the demo host that defines the named networks (hv03: prod and lab)."""
    detail = server.get("/api/v1/hosts/hv03")
    for vm in detail["vms"]:
        full = server.get(f"/api/v1/vms/{vm['id']}")
        if full["generation"] == 2 and not full["busy_job"]:
            return vm["id"], vm["name"]
    raise AssertionError("hv03 has no generation 2 VM")


def open_vm(browser, server, vm_id, section):
    go(browser, server, f"#/vms/{vm_id}")
    browser.refresh()
    wait(browser, lambda d: css(d, section), message=f"{section} never shown")


def confirm_typed(browser, name):
    dialog = wait(browser, lambda d: css(d, "#typed-dialog[open]") and css(d, "#typed-dialog")[0],
                  message="the typed confirmation never opened")
    submit = browser.find_element(By.ID, "typed-submit")
    assert not submit.is_enabled(), "confirm enabled before the name was typed"
    box = browser.find_element(By.ID, "typed-confirm")
    box.send_keys(name + "x")
    assert not submit.is_enabled(), "confirm enabled with a wrong name"
    box.clear()
    box.send_keys(name)
    assert submit.is_enabled()
    assert dialog.is_displayed()
    submit.click()


def click(browser, selector):
    button = wait(browser, lambda d: css(d, selector) and css(d, selector)[0].is_enabled() and css(d, selector)[0],
                  timeout=30, message=f"{selector} never enabled")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


def test_checkpoints_through_the_ui(server, browser, screenshot):
    vm_id, vm_name = networked_vm(server)
    name = "ui-cp-" + secrets.token_hex(3)

    # Take a checkpoint.
    open_vm(browser, server, vm_id, "#checkpoint-section")
    box = browser.find_element(By.ID, "cp-create-name")
    box.send_keys(name)
    click(browser, "#cp-create-submit")
    job = follow_job(browser)
    assert server.get(f"/api/v1/jobs/{job}")["type"] == "checkpoint"
    tree = server.get(f"/api/v1/vms/{vm_id}/checkpoints")
    made = [c for c in tree["checkpoints"] if c["name"] == name]
    assert made, tree
    cp = made[0]["id"]

    # It is in the tree; apply it (the VM is turned off first if it runs).
    open_vm(browser, server, vm_id, f'li.checkpoint[data-checkpoint="{cp}"]')
    screenshot(browser, "vm-checkpoints")
    click(browser, f'button[data-cp-apply="{cp}"]')
    confirm_typed(browser, vm_name)
    follow_job(browser)
    assert server.get(f"/api/v1/vms/{vm_id}")["state"] in ("Off", "Saved")

    # Delete its subtree; the job follows the merge.
    open_vm(browser, server, vm_id, f'button[data-cp-delete-subtree="{cp}"]')
    click(browser, f'button[data-cp-delete-subtree="{cp}"]')
    confirm_typed(browser, vm_name)
    job = follow_job(browser)
    steps = [s["name"] for s in server.get(f"/api/v1/jobs/{job}")["steps"]]
    assert "Checkpoint.Merge" in steps, steps
    assert all(c["id"] != cp for c in server.get(f"/api/v1/vms/{vm_id}/checkpoints")["checkpoints"])
    assert js_errors(browser) == []


def test_network_adapters_through_the_ui(server, browser, screenshot):
    vm_id, vm_name = networked_vm(server)
    before = {n["id"] for n in server.get(f"/api/v1/vms/{vm_id}/network-adapters")}
    name = "ui-nic-" + secrets.token_hex(2)

    # Add an adapter on the named network "prod".
    open_vm(browser, server, vm_id, "#nic-add")
    browser.find_element(By.ID, "nic-add-network").send_keys("prod")
    browser.find_element(By.ID, "nic-add-name").send_keys(name)
    click(browser, "#nic-add-submit")
    job = follow_job(browser)
    result = server.get(f"/api/v1/jobs/{job}")["result"]
    adapter = result["adapter_id"]
    assert adapter and adapter not in before
    nic = server.get(f"/api/v1/vms/{vm_id}/network-adapters/{adapter}")
    assert nic["switch_name"] == "vSwitch-External" and nic["vlan_id"] == 10, nic

    # Change it: DHCP guard on.
    open_vm(browser, server, vm_id, f'button[data-nic-edit="{adapter}"]')
    screenshot(browser, "vm-network-adapters")
    click(browser, f'button[data-nic-edit="{adapter}"]')
    guard = wait(browser, lambda d: d.find_element(By.ID, f"nic-dhcp_guard-{adapter}"))
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", guard)
    guard.click()
    click(browser, f'button[data-nic-save="{adapter}"]')
    follow_job(browser)
    assert server.get(f"/api/v1/vms/{vm_id}/network-adapters/{adapter}")["dhcp_guard"] is True

    # Remove it after typing the VM's name.
    open_vm(browser, server, vm_id, f'button[data-nic-remove="{adapter}"]')
    click(browser, f'button[data-nic-remove="{adapter}"]')
    confirm_typed(browser, vm_name)
    follow_job(browser)
    assert adapter not in {n["id"] for n in server.get(f"/api/v1/vms/{vm_id}/network-adapters")}
    assert js_errors(browser) == []
