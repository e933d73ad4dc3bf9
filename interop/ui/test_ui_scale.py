"""The web UI with a larger demo fleet (50 hosts x 40 VMs = 2,000 VMs): the VM list is paged
from the server and renders one page, events are applied per animation frame, sort, filter,
page and scroll survive Back, bulk actions spawn one job per VM, and the overview is a grid.

Timings are printed (run pytest with -s to see them), never asserted: speed is measured by
benches/ui_scale.py at 100,000 VMs.
"""

import re
import time
import urllib.error

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

import uitiming

HOSTS, VMS_PER_HOST = 50, 40
FLEET = HOSTS * VMS_PER_HOST
PAGE = 100
ROWS = "#vm-table tbody tr[data-vm-id]"


def wait(driver, condition, timeout=30, message=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def css(driver, selector):
    return driver.find_elements(By.CSS_SELECTOR, selector)


def names(driver):
    return [r.get_attribute("data-vm-name") for r in css(driver, ROWS)]


def natural_key(name):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def report(label, value, unit="ms"):
    """Prints one measured figure (seen with pytest -s; speed is never asserted here)."""
    print(f"  UI timing ({FLEET:,} VMs): {label}: {value:.0f}{' ' + unit if unit else ''}")


@pytest.fixture(scope="module")
def fleet(start_server):
    return start_server(DEMO_HOSTS=HOSTS, DEMO_VMS_PER_HOST=VMS_PER_HOST, DEMO_CLUSTERS=2)


def test_vm_list_renders_one_page_from_the_server(fleet, browser, screenshot):
    assert fleet.get("/api/v1/vms?limit=1")["total"] == FLEET
    usable = uitiming.open_vm_list(browser, fleet.base)
    rows = css(browser, ROWS)
    # One page of rows in the document, not the fleet.
    assert len(rows) == PAGE, f"{len(rows)} rows rendered"
    assert browser.execute_script("return document.querySelectorAll('#vm-table tr').length") <= PAGE + 1
    assert browser.find_element(By.ID, "vm-count").text == f"{FLEET:,} VMs"
    assert browser.find_element(By.ID, "page-info").text == f"1–{PAGE} of {FLEET:,}"
    # The server's first page in its natural name order, shown as it came.
    expected = [v["name"] for v in fleet.get(f"/api/v1/vms?limit={PAGE}&sort=name")["vms"]]
    assert names(browser) == expected
    assert expected == sorted(expected, key=natural_key), "names not in natural order"
    assert any(len(re.sub(r"\D", "", n)) >= 3 for n in expected), "the page does not reach 3-digit names"
    screenshot(browser, "vms-paged")

    # Sorting asks the server; the first page comes back in the new order.
    t_sort = uitiming.sort_by(browser, "name", "-name")
    assert browser.find_element(By.CSS_SELECTOR, 'th[data-key="name"]').get_attribute("aria-sort") == "descending"
    expected = [v["name"] for v in fleet.get(f"/api/v1/vms?limit={PAGE}&sort=-name")["vms"]]
    assert names(browser) == expected
    t_sort_num = uitiming.sort_by(browser, "memory_assigned_bytes", "memory_assigned_bytes")
    # Filtering too: the count is the server's total of matches.
    running = fleet.get("/api/v1/vms?state=Running&limit=1")["total"]
    t_filter = uitiming.filter_state(browser, "Running")
    assert browser.find_element(By.ID, "vm-count").text == f"{running:,} matching VMs"
    assert {b.get_attribute("data-state") for b in css(browser, f"{ROWS} [data-state]")} == {"Running"}
    t_clear = uitiming.filter_state(browser, "")

    # Next and Previous walk the pages with the server's cursors; the page size is a choice.
    uitiming.sort_by(browser, "name", "name")
    first = names(browser)
    browser.find_element(By.ID, "page-next").click()
    wait(browser, lambda d: d.find_element(By.ID, "page-info").text == f"{PAGE + 1}–{2 * PAGE} of {FLEET:,}")
    second = names(browser)
    assert len(second) == PAGE and not set(second) & set(first)
    page = fleet.get(f"/api/v1/vms?limit={PAGE}&sort=name")
    assert second == [v["name"] for v in fleet.get(f"/api/v1/vms?limit={PAGE}&sort=name&cursor={page['next_cursor']}")["vms"]]
    browser.find_element(By.ID, "page-prev").click()
    wait(browser, lambda d: names(d) == first, message="Previous did not return to the first page")
    browser.find_element(By.CSS_SELECTOR, "#page-size option[value='50']").click()
    wait(browser, lambda d: len(css(d, ROWS)) == 50)
    assert "limit=50" in browser.current_url

    report("usable after navigation", usable)
    report("sort by name to paint", t_sort)
    report("sort by memory to paint", t_sort_num)
    report("filter state=Running to paint", t_filter)
    report("clear the filter to paint", t_clear)


def test_sort_filter_page_and_scroll_survive_back(fleet, browser):
    browser.get(f"{fleet.base}/#/vms?state=Running&sort=-name")
    browser.refresh()
    wait(browser, lambda d: (uitiming.painted(d) or {}).get("state") == "Running")
    browser.find_element(By.ID, "page-next").click()
    wait(browser, lambda d: d.find_element(By.ID, "page-info").text.startswith(f"{PAGE + 1}–"))
    page_two = names(browser)
    browser.execute_script("window.scrollTo(0, 1500)")
    wait(browser, lambda d: d.execute_script("return window.scrollY") > 1000)
    scrolled = browser.execute_script("return window.scrollY")
    time.sleep(0.3)  # the position is saved once per frame
    target = css(browser, ROWS)[40]
    name = target.get_attribute("data-vm-name")
    target.find_element(By.CSS_SELECTOR, "a.vm-link").click()
    wait(browser, lambda d: css(d, "#vm-name") and d.find_element(By.ID, "vm-name").text == name)

    browser.back()
    wait(browser, lambda d: names(d) == page_two, message="Back did not bring the same page back")
    assert browser.find_element(By.ID, "filter-state").get_attribute("value") == "Running"
    assert browser.find_element(By.CSS_SELECTOR, 'th[data-key="name"]').get_attribute("aria-sort") == "descending"
    assert browser.find_element(By.ID, "page-info").text.startswith(f"{PAGE + 1}–")
    wait(browser, lambda d: abs(d.execute_script("return window.scrollY") - scrolled) < 5,
         message="the scroll position was not restored")
    # And Previous still knows the way to the first page.
    browser.find_element(By.ID, "page-prev").click()
    wait(browser, lambda d: d.find_element(By.ID, "page-info").text.startswith("1–"))


def test_events_apply_per_frame_while_power_actions_stream(fleet, browser):
    uitiming.open_vm_list(browser, fleet.base, "#/vms?sort=name")
    on_page = {r.get_attribute("data-vm-id") for r in css(browser, ROWS)}
    vms = [v for v in fleet.get(f"/api/v1/vms?limit={PAGE}&sort=name")["vms"]
           if v["id"] in on_page and v["state"] in ("Running", "Off") and not v["busy_job"]]
    assert len(vms) >= 20
    watched = vms[0]
    before = watched["state"]
    uitiming.start_longtasks(browser)
    with uitiming.PowerLoad(fleet.base, vms, rate=10) as load:
        time.sleep(8)
    longest, count, events, seconds = uitiming.stop_longtasks(browser)
    assert not load.errors, load.errors
    assert load.sent > 20, f"only {load.sent} actions were accepted"
    assert events > 0, "the page received no events"
    # The rows follow: the first VM's badge changes from its state before the load.
    wait(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f'tr[data-vm-id="{watched["id"]}"] [data-state]').get_attribute("data-state") != before
        or fleet.get(f"/api/v1/vms/{watched['id']}")["state"] == before, timeout=30)
    state_now = fleet.get(f"/api/v1/vms/{watched['id']}")["state"]
    wait(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f'tr[data-vm-id="{watched["id"]}"] [data-state]').get_attribute("data-state") == state_now,
        timeout=30, message="the row did not follow the VM's state")
    assert len(css(browser, ROWS)) == PAGE
    report("events applied per second", events / seconds, "")
    report("power actions sent per second", load.sent / seconds, "")
    report("longest main-thread stall while events stream", longest)
    report("long tasks (>= 50 ms) while events stream", count, "")
    # Let the last jobs finish before the next test uses the fleet.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and fleet.get("/api/v1/jobs?status=running&limit=1")["total"]:
        time.sleep(0.5)


def _select(driver, vm_ids):
    for vm_id in vm_ids:
        box = driver.find_element(By.CSS_SELECTOR, f'input[data-select="{vm_id}"]')
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
        box.click()


def _jobs_for(server, vm_ids, kind):
    jobs = server.get("/api/v1/jobs?limit=1000")["jobs"]
    return [j for j in jobs if j["vm_id"] in vm_ids and j["type"] == kind]


def _idle_rows(driver, count):
    """{id: name} of the first `count` rows without a running job, read in one pass (a live
    update that re-renders a row meanwhile makes `wait` read them again); None if fewer."""
    rows = [r for r in css(driver, ROWS) if not r.find_elements(By.CSS_SELECTOR, ".busy")][:count]
    chosen = {r.get_attribute("data-vm-id"): r.get_attribute("data-vm-name") for r in rows}
    return chosen if len(chosen) == count else None


def test_bulk_power_action_confirms_once_and_spawns_one_job_per_vm(fleet, browser, screenshot):
    uitiming.open_vm_list(browser, fleet.base, "#/vms?state=Running")
    wait(browser, lambda d: len(css(d, ROWS)) > 5)
    chosen = wait(browser, lambda d: _idle_rows(d, 3), message="no three idle rows")
    assert not css(browser, "#bulk-bar:not([hidden])")
    _select(browser, chosen)
    bar = browser.find_element(By.ID, "bulk-bar")
    assert bar.is_displayed() and "3 VMs selected" in bar.text
    before = {j["id"] for j in _jobs_for(fleet, set(chosen), "power")}
    bar.find_element(By.CSS_SELECTOR, '[data-bulk-action="save"]').click()
    dialog = wait(browser, lambda d: d.find_element(By.ID, "confirm-dialog"))
    listed = {li.get_attribute("data-vm-id") for li in dialog.find_elements(By.CSS_SELECTOR, "#bulk-vms li")}
    assert listed == set(chosen), "the confirmation does not list exactly the selected VMs"
    for name in chosen.values():
        assert name in dialog.text
    screenshot(browser, "bulk-confirm")
    # Cancel sends nothing.
    browser.find_element(By.ID, "confirm-cancel").click()
    time.sleep(0.5)
    assert {j["id"] for j in _jobs_for(fleet, set(chosen), "power")} == before
    bar.find_element(By.CSS_SELECTOR, '[data-bulk-action="save"]').click()
    wait(browser, lambda d: d.find_element(By.ID, "confirm-ok")).click()
    wait(browser, lambda d: len({j["id"] for j in _jobs_for(fleet, set(chosen), "power")} - before) == 3,
         message="not one job per selected VM")
    new = [j for j in _jobs_for(fleet, set(chosen), "power") if j["id"] not in before]
    assert {j["vm_id"] for j in new} == set(chosen) and {j["action"] for j in new} == {"save"}
    wait(browser, lambda d: "3 jobs queued" in " ".join(t.text for t in css(d, ".toast")))
    wait(browser, lambda d: not d.find_element(By.ID, "bulk-bar").is_displayed(),
         message="the selection was not cleared after the jobs were queued")


def test_bulk_delete_lists_the_vms_and_wants_force_for_running_ones(fleet, browser):
    uitiming.open_vm_list(browser, fleet.base, "#/vms?state=Running")
    wait(browser, lambda d: len(css(d, ROWS)) > 5)
    chosen = wait(browser, lambda d: _idle_rows(d, 2), message="no two idle rows")
    _select(browser, chosen)
    browser.find_element(By.ID, "bulk-delete").click()
    dialog = wait(browser, lambda d: d.find_element(By.ID, "confirm-dialog"))
    assert {li.get_attribute("data-vm-id") for li in dialog.find_elements(By.CSS_SELECTOR, "#bulk-vms li")} == set(chosen)
    ok = browser.find_element(By.ID, "confirm-ok")
    assert not ok.is_enabled()
    browser.find_element(By.ID, "bulk-confirm").send_keys("2")
    # Both are running: Force is offered in the dialog and needed.
    assert not ok.is_enabled(), "delete enabled for running VMs without Force"
    browser.find_element(By.ID, "bulk-force").click()
    assert ok.is_enabled()
    browser.find_element(By.ID, "bulk-disks").click()
    ok.click()
    wait(browser, lambda d: len(_jobs_for(fleet, set(chosen), "delete")) == 2, message="not one delete job per VM")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and any(
            j["status"] not in ("succeeded", "failed", "cancelled") for j in _jobs_for(fleet, set(chosen), "delete")):
        time.sleep(0.5)
    assert {j["status"] for j in _jobs_for(fleet, set(chosen), "delete")} == {"succeeded"}
    for vm_id in chosen:
        with pytest.raises(urllib.error.HTTPError) as gone:
            fleet.get(f"/api/v1/vms/{vm_id}")
        assert gone.value.code == 404


def test_overview_with_50_hosts_is_a_grid(fleet, browser, screenshot):
    browser.get(f"{fleet.base}/")
    browser.refresh()
    wait(browser, lambda d: len(css(d, ".host[data-host]")) == HOSTS)
    lefts = browser.execute_script(
        "return Array.from(document.querySelectorAll('.host[data-host]')).map(e => Math.round(e.getBoundingClientRect().left))")
    columns = len(set(lefts))
    height = browser.execute_script("return document.documentElement.scrollHeight")
    assert columns >= 3, f"hosts are laid out in {columns} column(s)"
    # 50 hosts in one column were 5,800 px; in a grid they take a fraction of it.
    assert height < 5800 / 2, f"the overview is {height} px tall"
    # Names in natural order, and "last seen" relative to now.
    shown = [e.get_attribute("data-host") for e in css(browser, ".cluster:first-of-type .host[data-host]")]
    assert shown == sorted(shown, key=natural_key)
    seen = css(browser, ".host [data-rel-time]")
    assert seen and all(re.fullmatch(r"seen (just now|\d+ s ago|\d+ min ago)", s.text) for s in seen[:5]), \
        [s.text for s in seen[:5]]
    assert seen[0].get_attribute("title"), "the exact time is not in the title"
    screenshot(browser, "overview-50-hosts")
    report("overview height with 50 hosts", height, "px")
    report("overview host columns at 1280 px", columns, "")


def test_slash_focuses_search_and_dark_scheme(fleet, browser, screenshot):
    browser.get(f"{fleet.base}/#/jobs")
    browser.refresh()
    wait(browser, lambda d: css(d, "main h1"))
    browser.find_element(By.TAG_NAME, "body").send_keys("/")
    wait(browser, lambda d: d.switch_to.active_element.get_attribute("id") == "filter-q",
         message="/ did not open the VM search")
    assert "#/vms" in browser.current_url
    # On the list itself "/" focuses the box without typing a slash into it.
    browser.find_element(By.CSS_SELECTOR, "main h1").click()
    browser.switch_to.active_element.send_keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "filter-q"
    assert browser.find_element(By.ID, "filter-q").get_attribute("value") == ""
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)

    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        dark = browser.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
        text = browser.execute_script("return getComputedStyle(document.documentElement).color")

        def luminance(rgb):
            r, g, b = (int(x) / 255 for x in re.findall(r"\d+", rgb)[:3])
            lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
            return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

        assert luminance(dark) < 0.05, f"background {dark} is not dark"
        contrast = (luminance(text) + 0.05) / (luminance(dark) + 0.05)
        assert contrast >= 4.5, f"text contrast {contrast:.1f} below AA"
        table_bg = browser.execute_script(
            "return getComputedStyle(document.querySelector('.table-wrap')).backgroundColor")
        assert luminance(table_bg) < 0.05, f"the table stays light ({table_bg})"
        screenshot(browser, "vms-dark")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_a_page_left_while_its_reload_waits_does_not_take_the_address_back(fleet, browser):
    # A job event makes the job list schedule a reload (debounced); leaving the page before it
    # runs must leave the new page's address alone (the reload used to write #/jobs back).
    browser.get(f"{fleet.base}/#/jobs")
    browser.refresh()
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "main h1").text == "Jobs")
    wait(browser, lambda d: d.find_element(By.ID, "job-count").text.strip(),
         message="the job list did not load")
    vm = next(v for v in fleet.get(f"/api/v1/vms?limit={PAGE}&sort=name")["vms"]
              if v["state"] in ("Running", "Off") and not v["busy_job"])
    action = "start" if vm["state"] == "Off" else "stop"
    before = browser.execute_script("return window.aetherv.events")
    job = fleet.post(f"/api/v1/vms/{vm['id']}/actions/{action}", {})["job_id"]
    wait(browser, lambda d: d.execute_script("return window.aetherv.events") > before,
         timeout=10, message="the page received no event of the new job")
    time.sleep(0.1)  # a few animation frames: the job list has the event and waits to reload
    browser.execute_script("location.hash = '#/vms'")
    wait(browser, lambda d: css(d, "#filter-q"), message="the VM list did not open")
    time.sleep(1.5)  # longer than any page's reload delay
    assert "#/vms" in browser.current_url, browser.current_url
    assert browser.find_element(By.CSS_SELECTOR, "main h1").text != "Jobs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and fleet.get(f"/api/v1/jobs/{job}")["status"] in ("queued", "running"):
        time.sleep(0.5)
