"""Timings of the VM list in the browser, shared by the browser tests (a small demo fleet) and
benches/ui_scale.py (100,000 VMs).

Every figure is taken inside the page with `performance.now()`:

- usable after navigation: from the start of a full page load of `#/vms` until the first page
  of rows is painted (the UI records `window.aetherv.painted` one task after the frame that
  drew the rows);
- sort and filter to paint: from the click (or the change of a filter) until the re-sorted or
  re-filtered rows are painted;
- longest main-thread stall: the longest `longtask` entry (a task of 50 ms or more) reported by
  a PerformanceObserver while events stream; 0 means no task reached 50 ms.
"""

import threading
import time
import urllib.error
import urllib.request

from selenium.webdriver.support.ui import WebDriverWait

PAINT_TIMEOUT = 60


def painted(driver):
    return driver.execute_script("return window.aetherv && window.aetherv.painted")


def open_vm_list(driver, base, route="#/vms"):
    """Loads the page fresh at `route` and returns the milliseconds until rows are painted."""
    driver.get("about:blank")
    driver.get(f"{base}/{route}")
    WebDriverWait(driver, PAINT_TIMEOUT, poll_frequency=0.05).until(
        lambda d: (painted(d) or {}).get("reason") == "navigation", "the VM list was never painted")
    return painted(driver)["at"]


_AFTER = """
const [action, expect, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const before = (window.aetherv.painted || {}).seq || 0;
const t0 = performance.now();
const matches = (p) => p && p.seq > before && Object.entries(expect).every(([k, v]) => p[k] === v);
const poll = () => {
  const p = window.aetherv.painted;
  if (matches(p)) return done(p.at - t0);
  if (performance.now() - t0 > %d) return done(-1);
  requestAnimationFrame(poll);
};
(new Function(action))();
requestAnimationFrame(poll);
""" % (PAINT_TIMEOUT * 1000)


def time_to_paint(driver, action_js, expect):
    """Runs `action_js` in the page and returns the milliseconds until a render whose record
    matches `expect` (e.g. {"sort": "-name"}) is painted."""
    driver.set_script_timeout(PAINT_TIMEOUT + 5)
    ms = driver.execute_async_script(_AFTER, action_js, expect)
    if ms < 0:
        raise AssertionError(f"no paint matching {expect} within {PAINT_TIMEOUT} s")
    return ms


def sort_by(driver, column, expect_sort):
    return time_to_paint(driver, f'document.querySelector(\'button[data-sort="{column}"]\').click();',
                         {"sort": expect_sort})


def filter_state(driver, value):
    js = ("const s = document.getElementById('filter-state'); s.value = %r;"
          " s.dispatchEvent(new Event('change'));") % value
    return time_to_paint(driver, js, {"state": value})


def start_longtasks(driver):
    """Starts collecting long tasks in the page (Chromium's Long Tasks API)."""
    driver.execute_script("""
      window.__longtasks = [];
      window.__events0 = window.aetherv.events || 0;
      window.__t0 = performance.now();
      window.__lto = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__longtasks.push(e.duration);
      });
      window.__lto.observe({type: "longtask"});
    """)


def stop_longtasks(driver):
    """Returns (longest stall in ms, long tasks seen, events the page applied, seconds)."""
    return driver.execute_script("""
      window.__lto.disconnect();
      const tasks = window.__longtasks;
      return [tasks.length ? Math.max(...tasks) : 0, tasks.length,
              (window.aetherv.events || 0) - window.__events0,
              (performance.now() - window.__t0) / 1000];
    """)


class PowerLoad:
    """Turns VMs off and on again through the REST API at `rate` actions per second from
    background threads (`workers` of them, so a slow answer does not lower the rate), so the
    page receives a steady stream of job and VM events."""

    def __init__(self, base, vms, rate, workers=4):
        self.base = base
        self.vms = list(vms)
        self.rate = rate
        self.sent = 0
        self.refused = 0
        self.errors = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._threads = [threading.Thread(target=self._run, args=(workers,), daemon=True) for _ in range(workers)]

    def _post(self, path):
        req = urllib.request.Request(self.base + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def _run(self, workers):
        interval = workers / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                vm = self.vms[self._next % len(self.vms)]
                self._next += 1
            action = "stop" if vm["state"] == "Running" else "start"
            try:
                self._post(f"/api/v1/vms/{vm['id']}/actions/{action}")
                vm["state"] = "Off" if action == "stop" else "Running"
                with self._lock:
                    self.sent += 1
            except urllib.error.HTTPError as e:
                # 409: the VM is still busy with the previous action or in another state.
                with self._lock:
                    self.refused += 1
                    if e.code != 409:
                        self.errors.append(f"{action} {vm['name']}: HTTP {e.code}")
            except OSError as e:
                with self._lock:
                    self.errors.append(str(e))
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
