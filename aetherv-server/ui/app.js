// aetherv web UI: a single page on the public REST API (/api/v1) and its event streams.
// Every value from the API reaches the page through textContent or attributes set with
// setAttribute, never as markup.
"use strict";

(function () {
  // ---------------------------------------------------------------------------------------------
  // DOM helpers

  /** Creates an element: `attrs` keys are attributes, `on*` keys are listeners; children are
   * nodes or strings (added as text). */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") {
        node.addEventListener(key.slice(2), value);
      } else if (key === "class") {
        node.className = value;
      } else if (value === true) {
        node.setAttribute(key, "");
      } else {
        node.setAttribute(key, String(value));
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(node, child);
      else if (child instanceof Node) node.appendChild(child);
      else node.appendChild(document.createTextNode(String(child)));
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------------
  // Formatting

  function fmtBytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i === 0 ? String(v) : v.toFixed(v >= 100 ? 0 : 1)) + " " + units[i];
  }

  function fmtTime(s) {
    if (!s) return "—";
    const d = new Date(s);
    if (Number.isNaN(d.getTime())) return String(s);
    return d.toLocaleString();
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    let s = Math.floor(Number(seconds));
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const hr = Math.floor(s / 3600);
    s -= hr * 3600;
    const m = Math.floor(s / 60);
    if (d > 0) return d + "d " + hr + "h";
    if (hr > 0) return hr + "h " + m + "m";
    return m + "m " + (s - m * 60) + "s";
  }

  function shortId(id) {
    return String(id || "").slice(0, 8);
  }

  /** Natural order for names: app-2 before app-10, case-insensitive. */
  const naturalCollator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  const naturalCompare = (a, b) => naturalCollator.compare(String(a || ""), String(b || ""));

  /** "12 s ago", "5 min ago", "3 h ago", "2 days ago" (or "in …" for a clock ahead of ours). */
  function fmtRelative(s, now) {
    if (!s) return "never";
    const t = new Date(s).getTime();
    if (Number.isNaN(t)) return String(s);
    const diff = Math.round(((now || Date.now()) - t) / 1000);
    const abs = Math.abs(diff);
    let text;
    if (abs < 5) return "just now";
    if (abs < 60) text = abs + " s";
    else if (abs < 3600) text = Math.floor(abs / 60) + " min";
    else if (abs < 86400) text = Math.floor(abs / 3600) + " h";
    else text = Math.floor(abs / 86400) + (abs < 172800 ? " day" : " days");
    return diff >= 0 ? text + " ago" : "in " + text;
  }

  /** A time shown relative to now (kept current by a timer), the exact time in its title. */
  function relTime(s, prefix) {
    const node = h("time", { class: "rel-time", "data-rel-time": s || "", "data-prefix": prefix || "", datetime: s || null, title: s ? fmtTime(s) : null });
    node.textContent = (prefix || "") + fmtRelative(s);
    return node;
  }

  function refreshRelativeTimes() {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-rel-time]")) {
      const text = node.getAttribute("data-prefix") + fmtRelative(node.getAttribute("data-rel-time"), now);
      if (node.textContent !== text) node.textContent = text;
    }
  }

  /** A server or host message with byte counts written for people: "4294967296 bytes" and
   * "memory_startup_bytes 4294967296" become "4.0 GiB". */
  function humanize(message) {
    return String(message === null || message === undefined ? "" : message)
      .replace(/\b(\d{4,}) ?bytes\b/g, (_, n) => exactBytes(Number(n)))
      .replace(/\b(\w+_bytes)(\s*[=:]?\s*)(\d{4,})\b/g, (_, name, sep, n) => name + sep + exactBytes(Number(n)))
      .replace(/(\d [KMGTP]iB) \(\d{4,}\)/g, "$1");
  }

  /** A byte count in the largest binary unit that shows it exactly (4097 MiB, not 4.0 GiB),
   * else rounded like everywhere else. */
  function exactBytes(n) {
    const units = [["PiB", 2 ** 50], ["TiB", 2 ** 40], ["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
    for (const [unit, size] of units) {
      const v = n / size;
      if (v >= 1 && Math.round(v * 100) === v * 100) return v.toLocaleString("en-US", { maximumFractionDigits: 2 }) + " " + unit;
    }
    return fmtBytes(n);
  }

  /** A file path that breaks only after its separators, never inside a folder name. */
  function pathNode(path, attrs) {
    const node = h("code", Object.assign({ class: "path" }, attrs || {}));
    const parts = String(path).split(/(?<=[\\/])/);
    parts.forEach((part, i) => {
      const span = h("span", { class: "seg" }, part);
      node.appendChild(span);
      if (i < parts.length - 1) node.appendChild(document.createElement("wbr"));
    });
    return node;
  }

  /** Hyper-V's numeric VM states (Msvm_ComputerSystem EnabledState and its extensions). */
  const HYPERV_STATE_NAMES = {
    1: "Other",
    2: "Running",
    3: "Off",
    4: "Stopping",
    6: "Saved",
    9: "Paused",
    10: "Starting",
    11: "Reset",
    32773: "Saving",
    32776: "Pausing",
    32777: "Resuming",
    32779: "FastSaved",
    32780: "FastSaving",
    32781: "ForceShutdown",
    32782: "ForceReboot",
    32783: "Hibernated",
    32784: "ComponentServicing",
  };

  function stateName(value) {
    if (typeof value === "number" || /^\d+$/.test(String(value))) return HYPERV_STATE_NAMES[Number(value)] || "state " + value;
    return String(value);
  }

  /** "previous_state" -> "Previous state". */
  function keyLabel(key) {
    const text = String(key).replace(/_bytes$/, "").replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  /** A job result or any other API value as readable nodes: states by name, sizes in GiB,
   * paths that break at separators, nested objects as nested lists. */
  function valueNode(key, value) {
    if (value === null || value === undefined || value === "") return "—";
    if (/(^|_)state$/.test(key)) return stateName(value);
    if (/_bytes$/.test(key) && typeof value === "number") return fmtBytes(value);
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (Array.isArray(value)) {
      if (!value.length) return "none";
      return h("ul", { class: "plain" }, value.map((v) => h("li", {}, valueNode(key.replace(/s$/, ""), v))));
    }
    if (typeof value === "object") return kvList(value);
    if (typeof value === "string" && /(^|_)(path|paths|file)$/.test(key.replace(/s$/, "")) && /[\\/]/.test(value)) return pathNode(value);
    if (typeof value === "string" && /^[A-Za-z]:\\|^\//.test(value) && !/\s{2}/.test(value)) return pathNode(value);
    return humanize(String(value));
  }

  function kvList(object) {
    return h(
      "dl",
      { class: "kv" },
      Object.entries(object).map(([k, v]) => [h("dt", {}, keyLabel(k)), h("dd", {}, valueNode(k, v))])
    );
  }

  const VM_STATE_CLASS = {
    running: "ok",
    off: "off",
    saved: "warn",
    paused: "warn",
    starting: "info",
    stopping: "info",
    saving: "info",
    pausing: "info",
    resuming: "info",
    reset: "info",
  };
  const JOB_STATUS_CLASS = {
    queued: "off",
    running: "info",
    succeeded: "ok",
    failed: "bad",
    cancelled: "warn",
  };
  const HOST_STATUS_CLASS = { connected: "ok", disconnected: "bad", pending: "warn" };

  function badge(text, cls, extra) {
    return h("span", Object.assign({ class: "badge " + (cls || "") }, extra || {}), text);
  }
  function vmStateBadge(state) {
    const s = String(state || "unknown");
    return badge(s, VM_STATE_CLASS[s.toLowerCase()] || "", { "data-state": s });
  }
  function jobStatusBadge(status) {
    const s = String(status || "unknown");
    return badge(s, JOB_STATUS_CLASS[s] || "", { "data-status": s });
  }
  function hostStatusBadge(status) {
    const s = String(status || "unknown");
    return badge(s, HOST_STATUS_CLASS[s] || "", { "data-host-status": s });
  }

  /** A bar with a text label; `used` of `total`. */
  function capacity(label, used, total, detail) {
    const known = typeof total === "number" && total > 0 && typeof used === "number";
    const pct = known ? Math.min(100, Math.max(0, (used / total) * 100)) : 0;
    const fill = h("span");
    fill.style.width = pct.toFixed(1) + "%";
    return h(
      "div",
      { class: "cap" },
      h("div", { class: "cap-label" }, h("span", {}, label), h("span", {}, known ? detail : "unknown")),
      h("div", { class: "bar" + (pct >= 85 ? " high" : ""), "aria-hidden": "true" }, fill)
    );
  }

  function progressBar(percent, status, label) {
    const p = Math.min(100, Math.max(0, Number(percent) || 0));
    if (status === "failed" || status === "cancelled") {
      // A job that did not complete has no meaningful percentage (its status says how it ended).
      return h("div", { class: "progress ended", title: "The job ended before it completed" }, h("span", { class: "pct ended", "data-ended": status }, "—"));
    }
    const fill = h("span");
    fill.style.width = p + "%";
    return h(
      "div",
      { class: "progress" },
      h(
        "div",
        {
          class: "bar job " + (status || ""),
          role: "progressbar",
          "aria-valuemin": "0",
          "aria-valuemax": "100",
          "aria-valuenow": String(p),
          "aria-label": label || "Progress",
        },
        fill
      ),
      h("span", { class: "pct" }, p + "%")
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Messages: toasts (aria-live) and the banner (role=alert)

  function toast(message, kind) {
    const node = h("div", { class: "toast " + (kind || "") }, message);
    $("toasts").appendChild(node);
    placeToasts();
    setTimeout(() => {
      node.remove();
      placeToasts();
    }, 6000);
  }

  /** Toasts sit at the bottom right unless they would cover the newest line of a log (or
   * anything else marked data-toast-avoid); then they move to the top right. */
  function placeToasts() {
    const box = $("toasts");
    if (!box) return;
    box.classList.remove("top");
    if (!box.childElementCount) return;
    const r = box.getBoundingClientRect();
    const overlaps = (el) => {
      const o = el.getBoundingClientRect();
      return o.width > 0 && o.left < r.right && o.right > r.left && o.top < r.bottom && o.bottom > r.top;
    };
    const avoid = Array.from(document.querySelectorAll(".log > li:last-child, [data-toast-avoid]"));
    if (avoid.some(overlaps)) box.classList.add("top");
  }
  let toastFrame = 0;
  function schedulePlaceToasts() {
    if (toastFrame) return;
    toastFrame = requestAnimationFrame(() => {
      toastFrame = 0;
      placeToasts();
    });
  }
  window.addEventListener("scroll", schedulePlaceToasts, { passive: true });
  window.addEventListener("resize", () => placeToasts());

  function showBanner(parts, kind) {
    const text = $("banner-text");
    clear(text);
    append(text, (Array.isArray(parts) ? parts : [parts]).map((p) => (typeof p === "string" ? humanize(p) : p)));
    $("banner").className = "banner " + (kind || "");
    $("banner").hidden = false;
  }

  function hideBanner() {
    $("banner").hidden = true;
  }

  /** Shows the server's mode (`mode` of /api/v1/status): a badge next to the brand and, in demo
   * mode, a banner that stays, so nobody mistakes the simulated fleet for real hosts. */
  function showMode(status) {
    if (!status || !status.mode) return;
    const demo = status.mode === "demo";
    $("mode").textContent = demo ? "demo fleet" : status.mode;
    if (demo) {
      const authOn = Boolean(state.me && state.me.auth_enabled);
      $("demo-banner-text").textContent =
        "Demo mode — simulated hosts, authentication " + (authOn ? "on" : "off");
    }
    $("demo-banner").hidden = !demo;
  }

  function signInLink() {
    const url = (state.me && state.me.login_url) || "/oidc/login";
    return h("a", { href: url, id: "sign-in" }, "Sign in");
  }

  // ---------------------------------------------------------------------------------------------
  // API access

  class ApiFailure extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(humanize(err.message || "request failed with HTTP status " + status));
      this.status = status;
      this.code = err.code || "http_" + status;
      this.field = err.field || null;
      this.details = Array.isArray(err.details) ? err.details : [];
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      const failure = new ApiFailure(0, { error: { code: "network", message: "the server cannot be reached" } });
      reportError(failure);
      throw failure;
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!response.ok) {
      const failure = new ApiFailure(response.status, data);
      if (response.status === 401 || response.status === 403) reportError(failure);
      throw failure;
    }
    return data;
  }

  /** Shows an API error: 401 offers sign-in, 403 names the missing permission, others show the
   * server's message. */
  function reportError(failure) {
    if (failure.status === 401) {
      showBanner(["You are not signed in or your session has ended (" + failure.message + "). ", signInLink()]);
    } else if (failure.status === 403) {
      showBanner("Permission denied: " + failure.message);
    } else {
      showBanner("Error: " + failure.message + (failure.status ? " (HTTP " + failure.status + ")" : ""));
    }
  }

  /** Runs `fn`; an API failure is reported (unless already reported) and swallowed. */
  async function guarded(fn) {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof ApiFailure) {
        if (e.status !== 401 && e.status !== 403 && e.status !== 0) reportError(e);
        return undefined;
      }
      showBanner("Error: " + (e && e.message ? e.message : String(e)));
      return undefined;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // State and live events

  const state = {
    me: null,
    canWrite: false,
    view: null, // { name, refresh(kind, data), cleanup() }
    page: 0, // counts the pages shown; a page's pending work checks it is still the one shown
    events: null,
    navigated: false,
  };

  function setUser(me) {
    state.me = me;
    state.canWrite = !me || !me.auth_enabled || me.role === "writer" || me.role === "admin";
    state.isAdmin = !me || !me.auth_enabled || me.role === "admin";
    document.body.classList.toggle("role-reader", !state.canWrite);
    for (const link of document.querySelectorAll(".needs-writer")) link.hidden = !state.canWrite;
    const box = $("user");
    clear(box);
    if (!me) return;
    if (me.auth_enabled && !me.subject) {
      box.appendChild(signInLink());
      return;
    }
    if (me.auth_enabled) {
      box.appendChild(h("span", { id: "user-name" }, me.name || me.subject || "signed in"));
    }
    box.appendChild(h("span", { class: "role", id: "user-role", title: "Your role" }, me.role || "unknown"));
    if (me.auth_enabled && me.logout_url) {
      box.appendChild(h("a", { href: me.logout_url, id: "sign-out" }, "Sign out"));
    }
  }

  // Events are applied in one batch per animation frame: a burst of changes costs one render.
  let pendingEvents = [];
  let eventFrame = 0;
  function queueEvent(kind, data) {
    // A hidden tab gets no animation frames: past a bound, one resync replaces the backlog.
    if (pendingEvents.length >= 2000) pendingEvents = [["resync", {}]];
    pendingEvents.push([kind, data]);
    window.aetherv.events += 1;
    if (!eventFrame) eventFrame = requestAnimationFrame(flushEvents);
  }

  function flushEvents() {
    eventFrame = 0;
    const batch = pendingEvents;
    pendingEvents = [];
    const view = state.view;
    if (!view || !batch.length) return;
    if (view.applyBatch) view.applyBatch(batch);
    else if (view.refresh) for (const [kind, data] of batch) view.refresh(kind, data);
  }

  let eventRetry = null;
  function connectEvents() {
    if (state.events) state.events.close();
    const source = new EventSource("/api/v1/events");
    state.events = source;
    const forward = (kind) => (event) => {
      let data = null;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      queueEvent(kind, data);
    };
    for (const kind of [
      "vm_added",
      "vm_changed",
      "vm_removed",
      "host_connected",
      "host_disconnected",
      "host_removed",
      "resync",
      "job",
    ]) {
      source.addEventListener(kind, forward(kind));
    }
    source.addEventListener("hello", () => {
      // A (re)connection may have missed events: refresh what is shown.
      queueEvent("resync", {});
    });
    source.onerror = () => {
      // EventSource reconnects by itself unless the answer was not an event stream (for
      // example a 401); then retry slowly.
      if (source.readyState === EventSource.CLOSED && !eventRetry) {
        eventRetry = setTimeout(() => {
          eventRetry = null;
          connectEvents();
        }, 10000);
      }
    };
  }

  /**
   * Calls `fn` at most once per `ms`, trailing: a page's own reloads. A call still waiting when
   * the page is left never runs (it would load into a page no longer shown and rewrite the
   * address of the one shown now).
   */
  function debounce(fn, ms) {
    const page = state.page;
    let timer = null;
    return (...args) => {
      if (timer) return;
      timer = setTimeout(() => {
        timer = null;
        if (state.page === page) fn(...args);
      }, ms);
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Router

  const routes = [
    [/^#?\/?$/, () => overviewView()],
    [/^#\/vms\/?$/, () => vmsView()],
    [/^#\/vms\/(.+)$/, (m) => vmDetailView(decodeURIComponent(m[1]))],
    [/^#\/create\/?$/, () => createView()],
    [/^#\/jobs\/?$/, () => jobsView()],
    [/^#\/jobs\/(.+)$/, (m) => jobDetailView(decodeURIComponent(m[1]))],
    [/^#\/hosts\/(.+)$/, (m) => window.AethervHosts.view(decodeURIComponent(m[1]), kit())],
    [/^#\/maintenance\/?$/, () => window.AethervMaintenance.view(kit())],
  ];

  /** The helpers the host and maintenance pages (hosts.js, maintenance.js) use. */
  function kit() {
    return {
      h, clear, api, guarded, toast, fmtBytes, fmtTime, badge, jobStatusBadge, vmStateBadge,
      hostStatusBadge, capacity, progressBar, focusHeading, canWrite: state.canWrite,
    };
  }

  function route() {
    if (state.view && state.view.cleanup) state.view.cleanup();
    state.view = null;
    state.page += 1;
    const full = location.hash || "#/";
    const q = full.indexOf("?");
    const hash = q >= 0 ? full.slice(0, q) : full;
    const main = $("main");
    clear(main);
    let nav = null;
    for (const [pattern, make] of routes) {
      const m = hash.match(pattern);
      if (m) {
        state.view = make(m);
        nav = state.view.name;
        break;
      }
    }
    if (!state.view) {
      main.appendChild(h("h1", {}, "Page not found"));
      main.appendChild(h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
    }
    for (const link of document.querySelectorAll("[data-nav]")) {
      const active = link.getAttribute("data-nav") === (nav === "vm" ? "vms" : nav === "job" ? "jobs" : nav);
      if (active) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  /** Moves focus to the new page's heading so keyboard and screen-reader users follow. */
  function focusHeading(main) {
    const heading = main.querySelector("h1");
    if (heading && state.navigated && document.activeElement === document.body) {
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: true });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Overview

  function overviewView() {
    const main = $("main");
    const body = h("div", { id: "overview" }, h("p", { class: "loading" }, "Loading…"));
    main.appendChild(h("h1", {}, "Overview"));
    main.appendChild(body);
    let alive = true;
    let lastJson = "";

    async function load() {
      const result = await guarded(() =>
        Promise.all([api("GET", "/api/v1/status"), api("GET", "/api/v1/clusters"), api("GET", "/api/v1/hosts")])
      );
      if (!result || !alive) return;
      const [status, clusters, hosts] = result;
      // Nothing changed (most VM events do not touch the totals): keep the page as it is.
      const json = JSON.stringify(result);
      if (json === lastJson) return;
      lastJson = json;
      render(status, clusters.clusters || [], hosts.hosts || []);
    }

    function render(status, clusters, hosts) {
      clear(body);
      showMode(status);
      const sum = (key) => hosts.reduce((a, x) => a + (typeof x[key] === "number" ? x[key] : 0), 0);
      const connected = hosts.filter((x) => x.status === "connected").length;
      const byState = {};
      for (const host of hosts) {
        for (const [s, n] of Object.entries(host.vms_by_state || {})) byState[s] = (byState[s] || 0) + n;
      }
      const memTotal = sum("memory_total_bytes");
      const memFree = sum("memory_available_bytes");
      const stTotal = sum("storage_total_bytes");
      const stFree = sum("storage_free_bytes");
      const stat = (label, value, id) =>
        h("div", { class: "stat" }, h("span", { class: "label" }, label), h("span", { class: "value", id }, value));
      body.appendChild(
        h(
          "section",
          { "aria-label": "Totals", class: "totals" },
          stat("Clusters", clusters.length, "total-clusters"),
          stat("Hosts connected", connected + " / " + hosts.length, "total-hosts"),
          stat("VMs", status && typeof status.vms === "number" ? status.vms : sum("vm_count"), "total-vms"),
          stat("Jobs running", status ? status.jobs_running + " (" + status.jobs_queued + " queued)" : "—", "total-jobs"),
          stat("Memory free", fmtBytes(memFree) + " of " + fmtBytes(memTotal), "total-memory"),
          stat("Storage free", fmtBytes(stFree) + " of " + fmtBytes(stTotal), "total-storage")
        )
      );
      if (status && status.ready === false) {
        body.appendChild(h("p", { class: "error-text" }, "The server is not ready: " + (status.reason || "starting")));
      }
      body.appendChild(
        h("div", { class: "chips", "aria-label": "VMs by state" }, Object.entries(byState).sort().map(([s, n]) => stateChip(s, n)))
      );

      const grid = h("div", { class: "clusters" });
      const seen = new Set();
      for (const cluster of clusters.slice().sort((a, b) => naturalCompare(a.name, b.name))) {
        const members = hosts.filter((x) => x.cluster === cluster.name || (cluster.hosts || []).includes(x.name));
        members.forEach((x) => seen.add(x.name));
        grid.appendChild(clusterPanel(cluster.name, members, cluster));
      }
      const standalone = hosts.filter((x) => !seen.has(x.name));
      if (standalone.length) grid.appendChild(clusterPanel(null, standalone, null));
      body.appendChild(
        h(
          "div",
          { class: "head-row" },
          h("h2", {}, "Clusters and hosts"),
          state.canWrite && hosts.length
            ? h(
                "button",
                {
                  type: "button",
                  id: "refresh-all",
                  class: "btn btn-small",
                  disabled: refreshingAll,
                  title: "Read every host's facts and VMs now and list the hosts that do not answer",
                  onclick: (ev) => refreshAll(ev.currentTarget, hosts.length),
                },
                refreshingAll ? "Refreshing " + hosts.length + " hosts…" : "Refresh all hosts"
              )
            : null
        )
      );
      body.appendChild(grid);
      if (!hosts.length) body.appendChild(h("p", { class: "muted" }, "No hosts are configured."));
    }

    function stateChip(s, n) {
      return h(
        "a",
        { href: "#/vms?state=" + encodeURIComponent(s), class: "badge " + (VM_STATE_CLASS[s.toLowerCase()] || "") },
        s + ": " + n
      );
    }

    function clusterPanel(name, members, cluster) {
      const vmCount = cluster && typeof cluster.vm_count === "number" ? cluster.vm_count : members.reduce((a, x) => a + (x.vm_count || 0), 0);
      const connected = members.filter((x) => x.status === "connected").length;
      return h(
        "section",
        { class: "panel cluster", "data-cluster": name || "", "aria-label": name ? "Cluster " + name : "Standalone hosts" },
        h(
          "div",
          { class: "head-row" },
          h("h3", {}, name ? name : "Standalone hosts"),
          h("span", { class: "count" }, connected + "/" + members.length + " hosts connected · " + vmCount + " VMs")
        ),
        h("div", { class: "host-grid" }, members.slice().sort((a, b) => naturalCompare(a.name, b.name)).map(hostBlock))
      );
    }

    function hostBlock(host) {
      const memUsed = host.memory_total_bytes - host.memory_available_bytes;
      const stUsed = host.storage_total_bytes - host.storage_free_bytes;
      return h(
        "div",
        { class: "host", "data-host": host.name },
        h(
          "div",
          { class: "head-row" },
          h("a", { class: "host-name", href: "#/hosts/" + encodeURIComponent(host.name) }, host.name),
          hostStatusBadge(host.status),
          host.maintenance_state && host.maintenance_state !== "active" && window.AethervHosts
            ? window.AethervHosts.stateBadge(kit(), host.maintenance_state)
            : null,
          state.canWrite
            ? h(
                "button",
                {
                  type: "button",
                  class: "btn btn-small refresh-host",
                  "data-refresh-host": host.name,
                  title: "Read this host's facts and VMs now (brings a host back after an outage without waiting for the retry)",
                  onclick: (ev) => refreshHost(host.name, ev.currentTarget),
                },
                "Refresh"
              )
            : null
        ),
        host.last_error ? h("p", { class: "error-text" }, "Last error: " + host.last_error) : null,
        h(
          "p",
          { class: "hint" },
          (host.vm_count || 0) + " VMs",
          host.logical_processors ? " · " + host.logical_processors + " logical processors" : "",
          host.last_seen ? [" · ", relTime(host.last_seen, "seen ")] : " · never seen"
        ),
        capacity("Memory", memUsed, host.memory_total_bytes, fmtBytes(host.memory_available_bytes) + " free of " + fmtBytes(host.memory_total_bytes)),
        capacity("Storage", stUsed, host.storage_total_bytes, fmtBytes(host.storage_free_bytes) + " free of " + fmtBytes(host.storage_total_bytes)),
        h("div", { class: "chips" }, Object.entries(host.vms_by_state || {}).sort().map(([s, n]) => stateChip(s, n)))
      );
    }

    // While a refresh of every host runs (re-renders keep the button disabled).
    let refreshingAll = false;

    async function refreshAll(button, count) {
      refreshingAll = true;
      button.disabled = true;
      button.textContent = "Refreshing " + count + " hosts…";
      const result = await guarded(() => api("POST", "/api/v1/inventory/refresh"));
      refreshingAll = false;
      if (result) {
        const failed = result.failed || [];
        toast(fleetRefreshSummary(result), failed.length || !result.complete ? "error" : "");
      }
      lastJson = "";
      if (alive) load();
    }

    /** One sentence about a refresh of every host: who answered, who did not and why. */
    function fleetRefreshSummary(result) {
      const failed = result.failed || [];
      const seconds = (result.took_ms / 1000).toFixed(1) + " s";
      const named = failed
        .slice(0, 3)
        .map((f) => f.host + (f.error ? " (" + (f.error.length > 160 ? f.error.slice(0, 159) + "…" : f.error) + ")" : ""))
        .join("; ");
      const more = failed.length > 3 ? " and " + (failed.length - 3) + " more" : "";
      if (!result.complete) {
        // The server stopped waiting; `failed` lists the hosts not connected so far.
        const down = failed.length ? "; not connected so far: " + named + more : "";
        return "Still refreshing after " + seconds + " (the refreshes go on)" + down;
      }
      if (!failed.length) return "All " + result.hosts + " hosts answered (" + seconds + ")";
      return failed.length + " of " + result.hosts + " hosts did not answer: " + named + more;
    }

    async function refreshHost(name, button) {
      button.disabled = true;
      button.textContent = "Refreshing…";
      const result = await guarded(() => api("POST", "/api/v1/hosts/" + encodeURIComponent(name) + "/refresh"));
      if (result) {
        const ok = result.status === "connected";
        toast("Host " + name + (ok ? " refreshed" : " did not answer: " + (result.last_error || result.status)), ok ? "" : "error");
        lastJson = "";
        if (alive) load();
      } else {
        button.disabled = false;
        button.textContent = "Refresh";
      }
    }

    const reload = debounce(load, 1000);
    // VM changes only move the per-state counts: with thousands of VMs changing, those are
    // read again every few seconds, not once per change.
    const reloadCounts = debounce(load, 5000);
    load().then(() => focusHeading(main));
    return {
      name: "overview",
      applyBatch(batch) {
        if (batch.some(([kind]) => kind === "resync" || kind.startsWith("host_"))) reload();
        else if (batch.some(([kind]) => kind.startsWith("vm_"))) reloadCounts();
      },
      cleanup() {
        alive = false;
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // VMs table

  function hashQuery() {
    const i = location.hash.indexOf("?");
    return new URLSearchParams(i >= 0 ? location.hash.slice(i + 1) : "");
  }

  const VM_STATES = ["Running", "Off", "Saved", "Paused", "Starting", "Stopping", "Saving", "Pausing", "Resuming"];
  const VM_FILTERS = ["q", "host", "cluster", "state"];
  const VM_PAGE_SIZES = [50, 100, 200, 500];
  const VM_COLUMNS = [
    ["name", "Name"],
    ["state", "State"],
    ["host", "Host"],
    ["cluster", "Cluster"],
    ["processor_count", "CPUs", "num"],
    ["memory_assigned_bytes", "Memory", "num"],
    ["uptime_seconds", "Uptime", "num"],
    ["ip_addresses", "IP addresses"],
  ];

  /** The VM table's data source, and the only code that knows the paging contract of
   * `GET /api/v1/vms`: `limit`, an opaque `cursor`, `sort` (a column, `-` first for
   * descending; names in natural order) and the filters; the answer is
   * `{vms, next_cursor, total}`. */
  async function fetchVmPage(query) {
    const params = new URLSearchParams();
    for (const key of VM_FILTERS) if (query[key]) params.set(key, query[key]);
    params.set("sort", query.sort);
    params.set("limit", String(query.limit));
    if (query.cursor) params.set("cursor", query.cursor);
    const data = await api("GET", "/api/v1/vms?" + params.toString());
    const vms = (data && data.vms) || [];
    return { vms, next: (data && data.next_cursor) || null, total: data && typeof data.total === "number" ? data.total : vms.length };
  }

  const TRANSITIONAL_STATES = ["Starting", "Stopping", "Reset", "Saving", "Pausing", "Resuming", "FastSaving", "ForceShutdown", "ForceReboot", "ComponentServicing"];

  /** Whether Hyper-V allows `action` from `vmState`: the server's table, which the server
   * checks again; the UI uses it to offer only what can work. */
  function actionAllowed(action, vmState) {
    const s = String(vmState || "");
    const transitional = TRANSITIONAL_STATES.includes(s) || (/^\d+$/.test(s) && Number(s) >= 32768);
    switch (action) {
      case "start":
        return s === "Off" || s === "Saved";
      case "shutdown":
      case "restart":
      case "pause":
        return s === "Running";
      case "stop":
        return s === "Running" || s === "Paused" || s === "Saved" || transitional;
      case "save":
        return s === "Running" || s === "Paused";
      case "resume":
        return s === "Paused";
      default:
        return false;
    }
  }

  /** The fields a `vm_changed` or `vm_added` event carries, with the VM's id: a whole summary
   * (`{vm}`) or only what changed (`{id, changes}`). */
  function vmEventPatch(data) {
    if (!data) return null;
    if (data.vm && data.vm.id) return data.vm;
    const changes = data.changes || data.changed || data.fields;
    if (data.id && changes && typeof changes === "object") return Object.assign({ id: data.id }, changes);
    if (data.id) return data;
    return null;
  }

  /** Runs `task` over `items` with at most `limit` at a time; resolves to the results in order. */
  async function runLimited(items, limit, task) {
    const results = new Array(items.length);
    let next = 0;
    async function worker() {
      while (next < items.length) {
        const i = next++;
        results[i] = await task(items[i]);
      }
    }
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
    return results;
  }

  function vmsView() {
    const main = $("main");
    const initial = hashQuery();
    const query = {
      q: initial.get("q") || "",
      host: initial.get("host") || "",
      cluster: initial.get("cluster") || "",
      state: initial.get("state") || "",
      sort: VM_COLUMNS.some(([key]) => key === (initial.get("sort") || "").replace(/^-/, "")) ? initial.get("sort") : "name",
      limit: VM_PAGE_SIZES.includes(Number(initial.get("limit"))) ? Number(initial.get("limit")) : 100,
      cursor: initial.get("cursor") || "",
      page: Math.max(0, parseInt(initial.get("page") || "0", 10) || 0),
    };
    // This history entry remembers the cursors of earlier pages (for Previous), and under its
    // key the scroll position and the selection, so all of it survives Back.
    const entry = (history.state && history.state.vms) || {};
    const entryKey = typeof entry.key === "string" ? entry.key : Math.random().toString(36).slice(2);
    let prevCursors = Array.isArray(entry.prev) ? entry.prev.slice(0, query.page) : [];
    const storeKey = "aetherv.vms." + entryKey;
    const stored = readStore(storeKey);
    const selected = new Map((stored.selected || []).map((vm) => [vm.id, vm]));
    let vms = [];
    let next = null;
    let total = 0;
    let alive = true;
    let renderSeq = 0;
    let restoreScroll = typeof stored.scroll === "number" ? stored.scroll : null;

    function readStore(key) {
      try {
        return JSON.parse(sessionStorage.getItem(key) || "{}") || {};
      } catch (e) {
        return {};
      }
    }

    function saveStore() {
      try {
        sessionStorage.setItem(storeKey, JSON.stringify({ scroll: window.scrollY, selected: Array.from(selected.values()) }));
      } catch (e) {
        // Storage full or disabled: Back then starts at the top, which is harmless.
      }
    }

    function writeUrl() {
      const params = new URLSearchParams();
      for (const key of VM_FILTERS) if (query[key]) params.set(key, query[key]);
      if (query.sort !== "name") params.set("sort", query.sort);
      if (query.limit !== 100) params.set("limit", String(query.limit));
      if (query.cursor) {
        params.set("page", String(query.page));
        params.set("cursor", query.cursor);
      }
      const wanted = "#/vms" + (params.toString() ? "?" + params.toString() : "");
      const entryState = Object.assign({}, history.state || {}, { vms: { key: entryKey, prev: prevCursors } });
      history.replaceState(entryState, "", wanted);
    }

    const hostSelect = h("select", { id: "filter-host", name: "host" }, h("option", { value: "" }, "All hosts"));
    const clusterSelect = h("select", { id: "filter-cluster", name: "cluster" }, h("option", { value: "" }, "All clusters"));
    const stateSelect = h(
      "select",
      { id: "filter-state", name: "state" },
      h("option", { value: "" }, "All states"),
      VM_STATES.map((s) => h("option", { value: s }, s))
    );
    const qInput = h("input", { id: "filter-q", name: "q", type: "search", placeholder: "name, id, notes or IP", title: "Press / anywhere to search", autocomplete: "off", "aria-keyshortcuts": "/" });
    qInput.value = query.q;
    stateSelect.value = query.state;
    const countNode = h("p", { class: "count", id: "vm-count", "aria-live": "polite" });
    const tbody = h("tbody");
    const selectAll = state.canWrite
      ? h("input", { type: "checkbox", id: "select-page", "aria-label": "Select every VM on this page" })
      : null;
    const headerCells = VM_COLUMNS.map(([key, label, cls]) => {
      const indicator = h("span", { class: "sort-ind", "aria-hidden": "true" });
      const button = h("button", { type: "button", class: "sort-btn", "data-sort": key, onclick: () => setSort(key) }, label, indicator);
      return h("th", { scope: "col", class: cls || "", "data-key": key }, button);
    });
    const table = h(
      "table",
      { id: "vm-table" },
      h("caption", { class: "muted", hidden: true }, "Virtual machines; select a column header to sort"),
      h("thead", {}, h("tr", {}, selectAll ? h("th", { scope: "col", class: "select" }, selectAll) : null, headerCells)),
      tbody
    );
    const columnCount = VM_COLUMNS.length + (selectAll ? 1 : 0);

    const bulkCount = h("span", { id: "bulk-count", class: "bulk-count" });
    const bulkBar = h(
      "div",
      { class: "bulk-bar", id: "bulk-bar", role: "toolbar", "aria-label": "Actions on the selected VMs", hidden: true },
      bulkCount,
      ACTIONS.map(([action, label]) => h("button", { type: "button", class: "btn btn-small", "data-bulk-action": action, onclick: () => bulkPower(action) }, label + "…")),
      h("button", { type: "button", class: "btn btn-small btn-danger", id: "bulk-delete", onclick: () => bulkDelete() }, "Delete…"),
      h("button", { type: "button", class: "btn btn-small", id: "bulk-clear", onclick: () => clearSelection() }, "Clear selection")
    );

    const firstButton = h("button", { type: "button", class: "btn btn-small", id: "page-first", onclick: () => goFirst() }, "First");
    const prevButton = h("button", { type: "button", class: "btn btn-small", id: "page-prev", onclick: () => goPrev() }, "Previous");
    const nextButton = h("button", { type: "button", class: "btn btn-small", id: "page-next", onclick: () => goNext() }, "Next");
    const sizeSelect = h("select", { id: "page-size" }, VM_PAGE_SIZES.map((n) => h("option", { value: String(n) }, String(n))));
    sizeSelect.value = String(query.limit);
    const pageInfo = h("span", { class: "count", id: "page-info" });
    const pager = h(
      "nav",
      { class: "pager", "aria-label": "Pages of the VM list" },
      firstButton,
      prevButton,
      pageInfo,
      nextButton,
      h("label", { for: "page-size", class: "inline" }, "Rows per page"),
      sizeSelect
    );

    const field = (id, label, control) => h("div", { class: "field" }, h("label", { for: id }, label), control);
    main.appendChild(
      h("div", { class: "head-row" }, h("h1", {}, "Virtual machines"), state.canWrite ? h("a", { class: "btn btn-primary", href: "#/create" }, "Create VM") : null)
    );
    main.appendChild(
      h(
        "form",
        { class: "filters", role: "search", "aria-label": "Filter VMs", onsubmit: (e) => e.preventDefault() },
        field("filter-q", "Search", qInput),
        field("filter-host", "Host", hostSelect),
        field("filter-cluster", "Cluster", clusterSelect),
        field("filter-state", "State", stateSelect)
      )
    );
    main.appendChild(countNode);
    main.appendChild(bulkBar);
    main.appendChild(h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "VM table" }, table));
    main.appendChild(pager);
    writeUrl();
    if (state.focusSearch) {
      state.focusSearch = false;
      qInput.focus();
    }

    const onFilter = () => {
      query.q = qInput.value.trim();
      query.host = hostSelect.value;
      query.cluster = clusterSelect.value;
      query.state = stateSelect.value;
      goFirst();
    };
    let typing = null;
    qInput.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(onFilter, 250);
    });
    for (const s of [hostSelect, clusterSelect, stateSelect]) s.addEventListener("change", onFilter);
    sizeSelect.addEventListener("change", () => {
      query.limit = Number(sizeSelect.value);
      goFirst();
    });
    if (selectAll) {
      selectAll.addEventListener("change", () => {
        for (const vm of vms) {
          if (selectAll.checked) selected.set(vm.id, pick(vm));
          else selected.delete(vm.id);
        }
        selectionChanged();
      });
    }
    tbody.addEventListener("change", (e) => {
      const box = e.target;
      if (!box || !box.matches || !box.matches("input[data-select]")) return;
      const vm = vms.find((v) => v.id === box.getAttribute("data-select"));
      if (!vm) return;
      if (box.checked) selected.set(vm.id, pick(vm));
      else selected.delete(vm.id);
      selectionChanged();
    });

    /** What the selection keeps of a VM: enough to name it and to check an action. */
    function pick(vm) {
      return { id: vm.id, name: vm.name, host: vm.host, state: vm.state, busy_job: vm.busy_job || null, stale: !!vm.stale };
    }

    function goFirst() {
      query.cursor = "";
      query.page = 0;
      prevCursors = [];
      restoreScroll = 0;
      load("query");
    }

    function goNext() {
      if (!next) return;
      prevCursors.push(query.cursor);
      query.cursor = next;
      query.page += 1;
      restoreScroll = 0;
      load("page");
    }

    function goPrev() {
      if (query.page === 0) return;
      query.cursor = prevCursors.pop() || "";
      query.page = prevCursors.length ? query.page - 1 : 0;
      if (!query.cursor) query.page = 0;
      restoreScroll = 0;
      load("page");
    }

    function setSort(key) {
      const current = query.sort.replace(/^-/, "");
      query.sort = current === key && !query.sort.startsWith("-") ? "-" + key : key;
      // The header says at once what the rows will show when the server answers.
      renderSortIndicators();
      goFirst();
    }

    function renderSortIndicators() {
      const sortKey = query.sort.replace(/^-/, "");
      for (const th of headerCells) {
        const key = th.getAttribute("data-key");
        const ind = th.querySelector(".sort-ind");
        if (key === sortKey) {
          th.setAttribute("aria-sort", query.sort.startsWith("-") ? "descending" : "ascending");
          ind.textContent = query.sort.startsWith("-") ? "▼" : "▲";
        } else {
          th.removeAttribute("aria-sort");
          ind.textContent = "";
        }
      }
    }

    async function loadChoices() {
      const result = await guarded(() => Promise.all([api("GET", "/api/v1/hosts"), api("GET", "/api/v1/clusters")]));
      if (!result || !alive) return;
      const [hosts, clusters] = result;
      const names = (list) => list.map((x) => x.name).sort(naturalCompare);
      for (const name of names(hosts.hosts || [])) hostSelect.appendChild(h("option", { value: name }, name));
      for (const name of names(clusters.clusters || [])) clusterSelect.appendChild(h("option", { value: name }, name));
      hostSelect.value = query.host;
      clusterSelect.value = query.cluster;
    }

    let loadSeq = 0;
    async function load(reason) {
      const seq = ++loadSeq;
      const started = performance.now();
      writeUrl();
      let page;
      try {
        page = await fetchVmPage(query);
      } catch (e) {
        if (!alive || seq !== loadSeq) return;
        if (e instanceof ApiFailure && e.field === "cursor" && query.cursor) {
          // The cursor outlived the list it pointed into: start again from the first page.
          query.cursor = "";
          query.page = 0;
          prevCursors = [];
          return load(reason);
        }
        if (e instanceof ApiFailure && (e.status === 401 || e.status === 403 || e.status === 0)) return;
        reportError(e instanceof ApiFailure ? e : new ApiFailure(0, { error: { message: String(e) } }));
        return;
      }
      if (!alive || seq !== loadSeq) return;
      vms = page.vms;
      next = page.next;
      total = page.total;
      // Selected VMs on this page carry their latest state into a bulk action.
      for (const vm of vms) if (selected.has(vm.id)) selected.set(vm.id, pick(vm));
      renderRows();
      renderPager();
      selectionChanged();
      const paintedSeq = renderSeq;
      requestAnimationFrame(() =>
        setTimeout(() => {
          if (!alive) return;
          // User Timing marks: what the browser tests and the UI benchmark measure.
          performance.measure("aetherv:vms-" + reason, { start: started, end: performance.now() });
          window.aetherv.painted = { view: "vms", reason, seq: paintedSeq, rows: vms.length, sort: query.sort, q: query.q, state: query.state, at: performance.now() };
        })
      );
      if (restoreScroll !== null) {
        window.scrollTo(0, restoreScroll);
        restoreScroll = null;
      }
    }

    function renderPager() {
      const first = vms.length ? query.page * query.limit + 1 : 0;
      const last = query.page * query.limit + vms.length;
      const fmt = (n) => n.toLocaleString("en-US");
      const filtered = VM_FILTERS.some((k) => query[k]);
      countNode.textContent = fmt(total) + (filtered ? " matching VMs" : " VMs");
      pageInfo.textContent = vms.length ? fmt(first) + "–" + fmt(last) + " of " + fmt(total) : "none";
      firstButton.disabled = query.page === 0;
      prevButton.disabled = query.page === 0;
      nextButton.disabled = !next;
      pager.hidden = !next && query.page === 0;
    }

    const rowCache = new Map();
    function rowFor(vm) {
      const key = JSON.stringify(vm) + (selected.has(vm.id) ? "+" : "-");
      const cached = rowCache.get(vm.id);
      if (cached && cached.key === key) return cached.tr;
      const tr = h(
        "tr",
        { "data-vm-id": vm.id, "data-vm-name": vm.name, class: selected.has(vm.id) ? "selected" : null },
        state.canWrite
          ? h("td", { class: "select" }, h("input", { type: "checkbox", "data-select": vm.id, checked: selected.has(vm.id), "aria-label": "Select " + vm.name }))
          : null,
        h("td", {}, h("a", { href: "#/vms/" + encodeURIComponent(vm.id), class: "vm-link" }, vm.name), vm.clustered ? h("span", { class: "muted", title: "Clustered" }, " (HA)") : null),
        h(
          "td",
          {},
          vmStateBadge(vm.state),
          vm.stale ? [" ", badge("stale", "warn", { title: "The host is disconnected: this state may be out of date", class: "badge warn stale" })] : null,
          vm.busy_job ? [" ", h("a", { href: "#/jobs/" + encodeURIComponent(vm.busy_job), class: "badge info busy", title: "A job is running on this VM" }, "busy")] : null,
          vm.orphaned
            ? [" ", badge("orphaned", "warn", { title: "Left behind by a provisioning job this server is not running; an admin can remove or adopt it", class: "badge warn orphaned" })]
            : null
        ),
        h("td", {}, vm.host),
        h("td", {}, vm.cluster || "—"),
        h("td", { class: "num" }, vm.processor_count === null || vm.processor_count === undefined ? "—" : String(vm.processor_count)),
        h("td", { class: "num" }, fmtBytes(vm.memory_assigned_bytes || vm.memory_startup_bytes)),
        h("td", { class: "num" }, vm.uptime_seconds ? fmtDuration(vm.uptime_seconds) : "—"),
        h("td", { class: "mono" }, (vm.ip_addresses || []).join(", ") || "—")
      );
      rowCache.set(vm.id, { key, tr });
      return tr;
    }

    function renderRows() {
      renderSeq += 1;
      renderSortIndicators();
      // Live updates redraw rows: keep keyboard focus on the same element of the same VM.
      const active = document.activeElement;
      const focusRow = tbody.contains(active) ? active.closest("tr") : null;
      const focusId = focusRow ? focusRow.getAttribute("data-vm-id") : null;
      const focusSel = active && active.matches && active.matches("input[data-select]") ? "input[data-select]" : "a.vm-link";
      if (!vms.length) {
        const filtered = VM_FILTERS.some((k) => query[k]);
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: String(columnCount), class: "muted" }, filtered ? "No VMs match the filters." : "No VMs yet.")));
        rowCache.clear();
        return;
      }
      const rows = vms.map(rowFor);
      const ids = new Set(vms.map((vm) => vm.id));
      for (const id of Array.from(rowCache.keys())) if (!ids.has(id)) rowCache.delete(id);
      // The same VMs in the same order (an event changed some of them): swap only the rows
      // that changed, so the rest of the table is neither rebuilt nor laid out again.
      const current = tbody.children;
      const sameOrder = rows.length === current.length && vms.every((vm, i) => current[i].getAttribute("data-vm-id") === vm.id);
      if (sameOrder) {
        rows.forEach((tr, i) => {
          if (current[i] !== tr) current[i].replaceWith(tr);
        });
      } else {
        tbody.replaceChildren(...rows);
      }
      if (focusId && !tbody.contains(active)) {
        const again = tbody.querySelector('tr[data-vm-id="' + CSS.escape(focusId) + '"] ' + focusSel);
        if (again) again.focus({ preventScroll: true });
      }
      if (selectAll) {
        const onPage = vms.filter((vm) => selected.has(vm.id)).length;
        selectAll.checked = onPage > 0 && onPage === vms.length;
        selectAll.indeterminate = onPage > 0 && onPage < vms.length;
      }
    }

    function selectionChanged() {
      const n = selected.size;
      bulkBar.hidden = !state.canWrite || n === 0;
      bulkCount.textContent = n + (n === 1 ? " VM selected" : " VMs selected");
      for (const button of bulkBar.querySelectorAll("[data-bulk-action]")) {
        const action = button.getAttribute("data-bulk-action");
        button.disabled = !Array.from(selected.values()).some((vm) => actionAllowed(action, vm.state) && !vm.busy_job && !vm.stale);
      }
      renderRows();
      saveStore();
    }

    function clearSelection() {
      selected.clear();
      selectionChanged();
    }

    function vmList(list, id) {
      return h("ul", { class: "vm-list", id }, list.map((vm) => h("li", { "data-vm-id": vm.id }, h("strong", {}, vm.name), " on " + vm.host + " (" + vm.state + ")")));
    }

    async function bulkPower(action) {
      const label = actionLabel(action);
      const all = Array.from(selected.values());
      const eligible = all.filter((vm) => actionAllowed(action, vm.state) && !vm.busy_job && !vm.stale);
      const skipped = all.filter((vm) => !eligible.includes(vm));
      if (!eligible.length) return;
      const ok = await confirmDialog({
        title: label + " " + eligible.length + (eligible.length === 1 ? " VM" : " VMs"),
        content: [
          ACTION_WARNINGS[action] ? h("p", {}, ACTION_WARNINGS[action]) : null,
          h("p", {}, label + " these VMs (one job each):"),
          vmList(eligible, "bulk-vms"),
          skipped.length
            ? [h("p", { class: "hint" }, "Not included (busy, disconnected or not in a state that allows " + label.toLowerCase() + "):"), vmList(skipped, "bulk-skipped")]
            : null,
        ],
        confirmLabel: label + " " + eligible.length + (eligible.length === 1 ? " VM" : " VMs"),
        danger: action === "stop" || action === "restart",
      });
      if (!ok) return;
      await submitBulk(label, eligible, (vm) => api("POST", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/actions/" + action));
    }

    async function bulkDelete() {
      const list = Array.from(selected.values()).filter((vm) => !vm.busy_job && !vm.stale);
      const skipped = Array.from(selected.values()).filter((vm) => !list.includes(vm));
      if (!list.length) return;
      const running = list.filter((vm) => vm.state !== "Off");
      const force = h("input", { type: "checkbox", id: "bulk-force" });
      const disks = h("input", { type: "checkbox", id: "bulk-disks" });
      const typed = h("input", { type: "text", id: "bulk-confirm", autocomplete: "off", spellcheck: "false", inputmode: "numeric" });
      const n = list.length;
      const ok = await confirmDialog({
        title: "Delete " + n + (n === 1 ? " VM" : " VMs"),
        content: [
          h("p", {}, "This deletes these VMs (one job each). It cannot be undone."),
          vmList(list, "bulk-vms"),
          skipped.length ? [h("p", { class: "hint" }, "Not included (busy or disconnected):"), vmList(skipped, "bulk-skipped")] : null,
          running.length
            ? h(
                "div",
                { class: "field check" },
                force,
                h("label", { for: "bulk-force" }, running.length + (running.length === 1 ? " of them is" : " of them are") + " not off: turn " + (running.length === 1 ? "it" : "them") + " off first (Force)")
              )
            : null,
          h("div", { class: "field check" }, disks, h("label", { for: "bulk-disks" }, "Also delete the VMs' virtual disks")),
          h("div", { class: "field" }, h("label", { for: "bulk-confirm" }, "Type the number of VMs (" + n + ") to confirm"), typed),
        ],
        confirmLabel: "Delete " + n + (n === 1 ? " VM" : " VMs"),
        danger: true,
        valid: () => typed.value.trim() === String(n) && (!running.length || force.checked),
        watch: [typed, force],
      });
      if (!ok) return;
      const body = (vm) => ({ vm_id: vm.id, force: force.checked, delete_disks: disks.checked });
      await submitBulk("Delete", list, (vm) => api("POST", "/api/v1/vms/delete", body(vm)));
    }

    async function submitBulk(label, list, send) {
      for (const b of bulkBar.querySelectorAll("button")) b.disabled = true;
      const results = await runLimited(list, 4, (vm) =>
        send(vm).then(
          (r) => ({ vm, job: r && r.job_id }),
          (e) => ({ vm, error: e && e.message ? e.message : String(e) })
        )
      );
      const queued = results.filter((r) => r.job);
      const failed = results.filter((r) => !r.job);
      for (const r of queued) selected.delete(r.vm.id);
      selectionChanged();
      toast(label + ": " + queued.length + (queued.length === 1 ? " job" : " jobs") + " queued" + (failed.length ? ", " + failed.length + " refused" : ""), failed.length ? "error" : "");
      if (failed.length) showBanner(label + " was refused for " + failed.map((r) => r.vm.name + " (" + r.error + ")").join("; "));
      if (alive) load("bulk");
    }

    // Applying a frame's events: rows of this page change in place; anything that can change
    // which VMs the page holds (added, removed, a change under a filter or a sort by another
    // column) reloads the page, at most once a second.
    let refetchTimer = null;
    function refetchSoon(ms) {
      if (refetchTimer) return;
      refetchTimer = setTimeout(() => {
        refetchTimer = null;
        if (alive) load("event");
      }, ms);
    }

    function applyBatch(batch) {
      let changed = false;
      let refetch = false;
      const membership = VM_FILTERS.some((k) => query[k]) || query.sort.replace(/^-/, "") !== "name";
      const byId = new Map(vms.map((vm) => [vm.id, vm]));
      for (const [kind, data] of batch) {
        if (kind === "resync" || kind.startsWith("host_")) {
          refetch = true;
        } else if (kind === "vm_added") {
          refetch = true;
        } else if (kind === "vm_removed") {
          const id = data && data.id;
          if (selected.delete(id)) changed = true;
          refetch = true;
        } else if (kind === "vm_changed") {
          const patch = vmEventPatch(data);
          if (!patch) continue;
          const vm = byId.get(patch.id);
          if (vm) {
            Object.assign(vm, patch);
            changed = true;
          }
          if (selected.has(patch.id)) selected.set(patch.id, Object.assign(selected.get(patch.id), pick(Object.assign({}, selected.get(patch.id), patch))));
          if (membership) refetch = true;
        } else if (kind === "job" && data && data.vm_id) {
          const vm = byId.get(data.vm_id);
          const busy = data.status === "queued" || data.status === "running" ? data.id : null;
          if (vm && (busy || vm.busy_job === data.id)) {
            vm.busy_job = busy;
            changed = true;
          }
          const sel = selected.get(data.vm_id);
          if (sel && (busy || sel.busy_job === data.id)) sel.busy_job = busy;
        }
      }
      if (changed) {
        if (selected.size) selectionChanged();
        else renderRows();
      }
      if (refetch) refetchSoon(1000);
    }

    const onScroll = () => {
      if (scrollFrame) return;
      scrollFrame = requestAnimationFrame(() => {
        scrollFrame = 0;
        saveStore();
      });
    };
    let scrollFrame = 0;
    window.addEventListener("scroll", onScroll, { passive: true });

    loadChoices();
    load("navigation").then(() => focusHeading(main));
    return {
      name: "vms",
      search: qInput,
      applyBatch,
      cleanup() {
        saveStore();
        alive = false;
        window.removeEventListener("scroll", onScroll);
        clearTimeout(refetchTimer);
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // VM detail

  /** The power actions: the API name and the one name the UI uses for it everywhere (`stop`
   * is Hyper-V's Turn off). */
  const ACTIONS = [
    ["start", "Start"],
    ["shutdown", "Shut down"],
    ["stop", "Turn off"],
    ["restart", "Restart"],
    ["save", "Save"],
    ["pause", "Pause"],
    ["resume", "Resume"],
  ];

  /** Actions that lose the guest's unsaved work ask first. */
  const ACTION_WARNINGS = {
    stop: "Turn off is like pulling the plug: the guest does not shut down, and unsaved work in it is lost.",
    restart: "Restart resets the VM at once: the guest does not shut down, and unsaved work in it is lost.",
  };

  /** A modal question; resolves to true when confirmed. `content` is nodes; `valid()` (checked
   * whenever an element of `watch` changes) enables the confirm button. */
  function confirmDialog(opts) {
    return new Promise((resolve) => {
      const old = $("confirm-dialog");
      if (old) old.remove();
      const ok = h("button", { type: "submit", id: "confirm-ok", class: "btn " + (opts.danger ? "btn-danger" : "btn-primary") }, opts.confirmLabel || "OK");
      const dialog = h(
        "dialog",
        { id: "confirm-dialog", "aria-labelledby": "confirm-title" },
        h(
          "form",
          { method: "dialog", novalidate: true },
          h("h2", { id: "confirm-title" }, opts.title),
          h("div", { id: "confirm-body" }, opts.content),
          h("div", { class: "actions" }, h("button", { type: "button", id: "confirm-cancel", class: "btn", onclick: () => dialog.close("cancel") }, "Cancel"), ok)
        )
      );
      const check = () => {
        ok.disabled = opts.valid ? !opts.valid() : false;
      };
      for (const el of opts.watch || []) {
        el.addEventListener("input", check);
        el.addEventListener("change", check);
      }
      check();
      dialog.querySelector("form").addEventListener("submit", (e) => {
        if (opts.valid && !opts.valid()) {
          e.preventDefault();
          return;
        }
        dialog.returnValue = "ok";
      });
      dialog.addEventListener("close", () => {
        const confirmed = dialog.returnValue === "ok";
        dialog.remove();
        resolve(confirmed);
      });
      document.body.appendChild(dialog);
      dialog.showModal();
      const first = (opts.watch || [])[0];
      if (first && first.type === "text") first.focus();
      else if (opts.danger) dialog.querySelector("#confirm-cancel").focus();
      else ok.focus();
    });
  }

  function vmDetailView(id) {
    const main = $("main");
    const body = h("div", { id: "vm-detail" }, h("p", { class: "loading" }, "Loading…"));
    main.appendChild(body);
    let alive = true;
    let vm = null;
    let lastJson = "";

    async function load() {
      let data;
      try {
        data = await api("GET", "/api/v1/vms/" + encodeURIComponent(id));
      } catch (e) {
        if (!alive) return;
        clear(body);
        if (e instanceof ApiFailure && e.status === 404) {
          body.appendChild(h("h1", {}, "VM not found"));
          body.appendChild(h("p", {}, "No VM with id " + id + " exists (it may have been deleted). ", h("a", { href: "#/vms" }, "Back to the VM list")));
        } else {
          body.appendChild(h("h1", {}, "VM"));
          body.appendChild(h("p", { class: "error-text" }, "Could not load the VM: " + (e.message || String(e))));
        }
        return;
      }
      if (!alive) return;
      const json = JSON.stringify(data);
      if (json === lastJson) return;
      lastJson = json;
      vm = data;
      render();
    }

    async function act(action, button) {
      const label = actionLabel(action);
      if (ACTION_WARNINGS[action]) {
        const confirmed = await confirmDialog({
          title: label + " " + vm.name + "?",
          content: h("p", {}, ACTION_WARNINGS[action]),
          confirmLabel: label,
          danger: true,
        });
        if (!confirmed || !alive) return;
      }
      button.disabled = true;
      const result = await guarded(() => api("POST", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/actions/" + action));
      if (result && result.job_id) {
        toast(label + " requested for " + vm.name);
        location.hash = "#/jobs/" + encodeURIComponent(result.job_id);
      } else {
        button.disabled = false;
      }
    }

    async function removeOrphan(button) {
      if (!window.confirm("Remove the orphaned VM " + vm.name + " with its disks? This cannot be undone.")) return;
      button.disabled = true;
      const result = await guarded(() => api("POST", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/orphan/remove"));
      if (result && result.job_id) {
        toast("Removal of " + vm.name + " queued");
        location.hash = "#/jobs/" + encodeURIComponent(result.job_id);
      } else {
        button.disabled = false;
      }
    }

    async function adoptOrphan(button) {
      if (!window.confirm("Adopt " + vm.name + " as it is? Its notes will mark it as provisioned.")) return;
      button.disabled = true;
      const result = await guarded(() => api("POST", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/orphan/adopt"));
      if (result && result.job_id) {
        toast("Adoption of " + vm.name + " queued");
        location.hash = "#/jobs/" + encodeURIComponent(result.job_id);
      } else {
        button.disabled = false;
      }
    }

    function render() {
      const focusedAction = document.activeElement && document.activeElement.getAttribute("data-action");
      clear(body);
      const allowed = new Set(vm.allowed_actions || []);
      body.appendChild(
        h("div", { class: "head-row" }, h("h1", { id: "vm-name" }, vm.name), h("p", { class: "count" }, "VM id ", h("code", {}, vm.id)))
      );
      body.appendChild(
        h(
          "p",
          { class: "chips", id: "vm-status" },
          vmStateBadge(vm.state),
          vm.stale ? badge("stale: host disconnected", "warn", { class: "badge warn stale" }) : null,
          vm.busy_job ? h("a", { class: "badge info busy", href: "#/jobs/" + encodeURIComponent(vm.busy_job) }, "busy: job " + shortId(vm.busy_job)) : null,
          vm.orphaned ? badge("orphaned", "warn", { class: "badge warn orphaned", title: "Left behind by a provisioning job this server is not running" }) : null,
          vm.clustered ? badge("clustered", "info") : null
        )
      );
      if (vm.orphaned) {
        body.appendChild(
          h(
            "div",
            { class: "panel orphan-panel", id: "orphan-panel", role: "group", "aria-label": "Orphaned VM" },
            h(
              "p",
              {},
              "This VM was left behind by a provisioning job this server is not running (its notes name the job). ",
              state.isAdmin
                ? "Remove it to undo what provisioning made (the VM, its disks and its files), or adopt it to keep it as it is."
                : "An admin can remove or adopt it."
            ),
            h(
              "button",
              {
                type: "button",
                class: "btn btn-danger",
                id: "remove-orphan",
                disabled: !state.isAdmin || !!vm.busy_job,
                title: state.isAdmin ? null : "Only an admin can remove orphaned VMs",
                onclick: (e) => removeOrphan(e.currentTarget),
              },
              "Remove orphan"
            ),
            " ",
            h(
              "button",
              {
                type: "button",
                class: "btn",
                id: "adopt-orphan",
                disabled: !state.isAdmin || !!vm.busy_job,
                title: state.isAdmin ? null : "Only an admin can adopt orphaned VMs",
                onclick: (e) => adoptOrphan(e.currentTarget),
              },
              "Adopt"
            )
          )
        );
      }
      const actionBar = h(
        "div",
        { class: "actions", role: "group", "aria-label": "Power actions" },
        ACTIONS.map(([action, label]) => {
          const enabled = state.canWrite && allowed.has(action) && !vm.busy_job;
          return h(
            "button",
            {
              type: "button",
              class: "btn",
              "data-action": action,
              disabled: !enabled,
              title: !state.canWrite ? "Your role cannot change VMs" : allowed.has(action) ? null : "Not possible in state " + vm.state,
              onclick: (e) => act(action, e.currentTarget),
            },
            label
          );
        }),
        h(
          "button",
          { type: "button", class: "btn btn-danger", id: "delete-vm", disabled: !state.canWrite || !!vm.busy_job, onclick: () => openDelete(vm) },
          "Delete…"
        )
      );
      body.appendChild(actionBar);
      if (focusedAction) {
        const again = actionBar.querySelector('[data-action="' + focusedAction + '"]');
        if (again && !again.disabled) again.focus();
      }

      const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
      const grid = h("div", { class: "grid" });
      grid.appendChild(
        h(
          "section",
          { class: "panel", "aria-labelledby": "hw-title" },
          h("h2", { id: "hw-title" }, "Hardware"),
          kv([
            ["Host", h("a", { href: "#/hosts/" + encodeURIComponent(vm.host) }, vm.host)],
            ["Cluster", vm.cluster || "—"],
            ["CPUs", vm.processor_count === null || vm.processor_count === undefined ? "—" : String(vm.processor_count)],
            ["Memory (startup)", fmtBytes(vm.memory_startup_bytes)],
            ["Memory (assigned)", fmtBytes(vm.memory_assigned_bytes)],
            ["Dynamic memory", vm.dynamic_memory ? "yes (" + fmtBytes(vm.memory_minimum_bytes) + " – " + fmtBytes(vm.memory_maximum_bytes) + ")" : "no"],
            ["Generation", vm.generation === null || vm.generation === undefined ? "—" : String(vm.generation)],
            ["Configuration version", vm.version || "—"],
            ["Uptime", vm.uptime_seconds ? fmtDuration(vm.uptime_seconds) : "—"],
            ["Created", fmtTime(vm.creation_time)],
            ["Path", vm.path ? pathNode(vm.path, { id: "vm-path" }) : "—"],
          ])
        )
      );
      const ips = vm.ip_addresses || [];
      grid.appendChild(
        h(
          "section",
          { class: "panel", "aria-labelledby": "net-title" },
          h("h2", { id: "net-title" }, "Network"),
          h("p", {}, "IP addresses: ", ips.length ? h("span", { class: "mono", id: "vm-ips" }, ips.join(", ")) : "none reported"),
          (vm.network_adapters || []).length
            ? h(
                "ul",
                {},
                vm.network_adapters.map((n) =>
                  h(
                    "li",
                    {},
                    h("strong", {}, n.name || "adapter"),
                    " on ",
                    n.switch_name || "no switch",
                    n.vlan_id ? ", VLAN " + n.vlan_id : "",
                    n.mac_address ? ", MAC " + n.mac_address : "",
                    (n.ip_addresses || []).length ? ", " + n.ip_addresses.join(", ") : ""
                  )
                )
              )
            : h("p", { class: "muted" }, "No network adapters.")
        )
      );
      grid.appendChild(
        h(
          "section",
          { class: "panel", "aria-labelledby": "notes-title" },
          h("h2", { id: "notes-title" }, "Notes"),
          vm.notes ? h("pre", { id: "vm-notes" }, vm.notes) : h("p", { class: "muted" }, "No notes.")
        )
      );
      body.appendChild(grid);
      body.appendChild(nicSection(vm));
      body.appendChild(checkpointSection(vm));

      const disks = vm.disks || [];
      body.appendChild(h("h2", {}, "Disks"));
      body.appendChild(
        disks.length
          ? h(
              "div",
              { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Disks" },
              h(
                "table",
                {},
                h(
                  "thead",
                  {},
                  h("tr", {}, ["Path", "Controller", "Type", "Size", "Used"].map((c) => h("th", { scope: "col" }, c)))
                ),
                h(
                  "tbody",
                  {},
                  disks.map((d) =>
                    h(
                      "tr",
                      {},
                      h("td", {}, d.path ? pathNode(d.path) : "—"),
                      h("td", {}, [d.controller_type, d.controller_number, d.controller_location].filter((x) => x !== null && x !== undefined).join(" ")),
                      h("td", {}, d.disk_type || "—"),
                      h("td", {}, fmtBytes(d.max_size_bytes)),
                      h("td", {}, fmtBytes(d.file_size_bytes))
                    )
                  )
                )
              )
            )
          : h("p", { class: "muted" }, "No disks.")
      );
      if (window.AethervDay2) {
        body.appendChild(window.AethervDay2.sections(vm, { h, api, guarded, toast, fmtBytes, pathNode, canWrite: state.canWrite }));
      }
      if (window.AethervMigrate) {
        body.appendChild(window.AethervMigrate.section(vm, { h, api, toast, fmtBytes, canWrite: state.canWrite }));
      }
      if ((vm.dvd_drives || []).length) {
        body.appendChild(h("h2", {}, "DVD drives"));
        body.appendChild(
          h(
            "ul",
            { id: "vm-dvd-drives" },
            vm.dvd_drives.map((d) =>
              typeof d === "string"
                ? h("li", {}, pathNode(d))
                : h(
                    "li",
                    { class: "dvd" },
                    [d.controller_type || "DVD", d.controller_number, d.controller_location].filter((x) => x !== null && x !== undefined && x !== "").join(" ") + ": ",
                    d.path ? pathNode(d.path) : h("span", { class: "muted" }, "empty (no disc inserted)")
                  )
            )
          )
        );
      }
      if (vm.integration_services && typeof vm.integration_services === "object") {
        const entries = Array.isArray(vm.integration_services)
          ? vm.integration_services.map((s) => [s.name || JSON.stringify(s), s.enabled === undefined ? "" : s.enabled ? "enabled" : "disabled"])
          : Object.entries(vm.integration_services).map(([k, v]) => [k, v && typeof v === "object" ? Object.entries(v).map(([a, b]) => keyLabel(a).toLowerCase() + " " + (typeof b === "boolean" ? (b ? "yes" : "no") : String(b))).join(", ") : String(v)]);
        if (entries.length) {
          body.appendChild(h("h2", {}, "Integration services"));
          body.appendChild(h("ul", {}, entries.map(([k, v]) => h("li", {}, k + (v ? ": " + v : "")))));
        }
      }
    }

    const reload = debounce(load, 700);
    load().then(() => focusHeading(main));
    return {
      name: "vm",
      refresh(kind, data) {
        if (kind === "resync" || kind.startsWith("host_")) reload();
        else if ((kind === "vm_changed" || kind === "vm_added") && (vmEventPatch(data) || {}).id === id) reload();
        else if (kind === "vm_removed" && data.id === id) reload();
        else if (kind === "job" && data.vm_id === id) reload();
      },
      cleanup() {
        alive = false;
      },
    };
  }

  // Delete dialog -------------------------------------------------------------------------------

  let deleteTarget = null;

  function openDelete(vm) {
    deleteTarget = vm;
    const dialog = $("delete-dialog");
    $("delete-title").textContent = "Delete VM " + vm.name;
    $("delete-warning").textContent =
      "This deletes the VM " + vm.name + " on host " + vm.host + ". It cannot be undone.";
    $("delete-confirm-hint").textContent = "Type " + vm.name + " exactly.";
    $("delete-confirm").value = "";
    $("delete-force").checked = false;
    $("delete-disks").checked = false;
    // Only a VM that is not Off needs Force; the dialog says so instead of letting the server
    // refuse after it closed.
    const needsForce = vm.state !== "Off";
    $("delete-force-field").hidden = !needsForce;
    $("delete-force-label").textContent = needsForce
      ? "Turn it off first: " + vm.name + " is " + vm.state + " (Force; unsaved work in the guest is lost)"
      : "";
    $("delete-submit").disabled = true;
    dialog.showModal();
    $("delete-confirm").focus();
  }

  function deleteReady() {
    const vm = deleteTarget;
    return !!vm && $("delete-confirm").value === vm.name && (vm.state === "Off" || $("delete-force").checked);
  }

  function setupDeleteDialog() {
    const dialog = $("delete-dialog");
    const update = () => {
      $("delete-submit").disabled = !deleteReady();
    };
    $("delete-confirm").addEventListener("input", update);
    $("delete-force").addEventListener("change", update);
    $("delete-cancel").addEventListener("click", () => dialog.close());
    $("delete-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const vm = deleteTarget;
      if (!deleteReady()) return;
      $("delete-submit").disabled = true;
      const body = { vm_id: vm.id, force: $("delete-force").checked, delete_disks: $("delete-disks").checked };
      const result = await guarded(() => api("POST", "/api/v1/vms/delete", body));
      dialog.close();
      if (result && result.job_id) {
        toast("Deletion of " + vm.name + " started");
        location.hash = "#/jobs/" + encodeURIComponent(result.job_id);
      }
    });
  }

  // Network adapters and checkpoints -------------------------------------------------------------

  /** Asks the operator to type the VM's name before a destructive change; resolves to true
   * when confirmed. */
  function confirmTyped(vm, title, warning) {
    return new Promise((resolve) => {
      const input = h("input", { id: "typed-confirm", type: "text", autocomplete: "off", spellcheck: "false", "aria-describedby": "typed-confirm-hint" });
      const submit = h("button", { type: "submit", id: "typed-submit", class: "btn btn-danger", disabled: true }, "Confirm");
      const dialog = h(
        "dialog",
        { id: "typed-dialog", "aria-labelledby": "typed-title" },
        h(
          "form",
          { method: "dialog", novalidate: true },
          h("h2", { id: "typed-title" }, title),
          h("p", { id: "typed-warning" }, warning),
          h("div", { class: "field" }, h("label", { for: "typed-confirm" }, "Type the VM name to confirm"), input, h("p", { id: "typed-confirm-hint", class: "hint" }, "Type " + vm.name + " exactly.")),
          h("div", { class: "actions" }, h("button", { type: "button", id: "typed-cancel", class: "btn", onclick: () => dialog.close("cancel") }, "Cancel"), " ", submit)
        )
      );
      input.addEventListener("input", () => {
        submit.disabled = input.value !== vm.name;
      });
      dialog.addEventListener("close", () => {
        const ok = dialog.returnValue !== "cancel" && input.value === vm.name;
        dialog.remove();
        resolve(ok);
      });
      dialog.querySelector("form").addEventListener("submit", (e) => {
        if (input.value !== vm.name) {
          e.preventDefault();
          return;
        }
        dialog.returnValue = "ok";
      });
      document.body.appendChild(dialog);
      dialog.showModal();
      input.focus();
    });
  }

  /** Sends a change and follows its job live on the job page. */
  async function submitChange(method, path, body, what, button) {
    if (button) button.disabled = true;
    const result = await guarded(() => api(method, path, body));
    if (result && result.job_id) {
      toast(what + " queued");
      location.hash = "#/jobs/" + encodeURIComponent(result.job_id);
    } else if (button) {
      button.disabled = false;
    }
  }

  function fmtBps(n) {
    if (!n) return "none";
    if (n >= 1e9) return (n / 1e9).toFixed(1) + " Gbit/s";
    if (n >= 1e6) return (n / 1e6).toFixed(0) + " Mbit/s";
    return String(n) + " bit/s";
  }

  function nicSection(vm) {
    const base = "/api/v1/vms/" + encodeURIComponent(vm.id) + "/network-adapters";
    const can = state.canWrite && !vm.busy_job && !vm.stale;
    const nics = vm.network_adapters || [];
    const section = h("section", { class: "panel", id: "nic-section", "aria-labelledby": "nic-title" }, h("h2", { id: "nic-title" }, "Network adapters"));
    const rows = nics.map((n) => {
      const editor = h("form", { class: "nic-editor", hidden: true, novalidate: true, "data-adapter": n.id || "" });
      const field = (name, label, value, type) =>
        h("div", { class: "field" }, h("label", { for: "nic-" + name + "-" + n.id }, label), h("input", { id: "nic-" + name + "-" + n.id, name, type: type || "text", value: value === null || value === undefined ? "" : String(value) }));
      const check = (name, label, on) =>
        h("div", { class: "field check" }, h("input", { id: "nic-" + name + "-" + n.id, name, type: "checkbox", checked: !!on }), h("label", { for: "nic-" + name + "-" + n.id }, label));
      append(editor, [
        field("network", "Network (name; empty keeps the switch)", ""),
        field("vlan_id", "VLAN (empty: untagged)", n.vlan_id, "number"),
        field("mac_address", "MAC address (dynamic or 12 hex digits; VM must be Off)", n.mac_type === "static" ? n.mac_address : "dynamic"),
        check("mac_spoofing", "MAC address spoofing", n.mac_spoofing),
        check("dhcp_guard", "DHCP guard", n.dhcp_guard),
        check("router_guard", "Router guard", n.router_guard),
        field("maximum_bandwidth_bps", "Maximum bandwidth (bit/s, 0: none)", n.maximum_bandwidth_bps, "number"),
        field("minimum_bandwidth_bps", "Minimum bandwidth (bit/s, 0: none)", n.minimum_bandwidth_bps, "number"),
        h("div", { class: "actions" }, h("button", { type: "submit", class: "btn", "data-nic-save": n.id }, "Save changes")),
      ]);
      editor.addEventListener("submit", (e) => {
        e.preventDefault();
        const f = editor.elements;
        const body = {};
        if (f.network.value.trim()) body.network = f.network.value.trim();
        const vlan = f.vlan_id.value.trim() === "" ? null : Number(f.vlan_id.value);
        if (vlan !== (n.vlan_id === undefined ? null : n.vlan_id) || body.network) body.vlan_id = vlan;
        const mac = f.mac_address.value.trim();
        const currentMac = n.mac_type === "static" ? n.mac_address : "dynamic";
        if (mac && mac.toLowerCase() !== String(currentMac).toLowerCase()) body.mac_address = mac;
        for (const k of ["mac_spoofing", "dhcp_guard", "router_guard"]) if (f[k].checked !== !!n[k]) body[k] = f[k].checked;
        for (const k of ["maximum_bandwidth_bps", "minimum_bandwidth_bps"]) {
          const v = Number(f[k].value || 0);
          if (v !== (n[k] || 0)) body[k] = v;
        }
        submitChange("PATCH", base + "/" + encodeURIComponent(n.id), body, "Change of adapter " + n.name, e.submitter);
      });
      return h(
        "li",
        { class: "nic", "data-adapter": n.id || "" },
        h("strong", {}, n.name || "adapter"),
        " on ",
        n.switch_name || "no switch",
        ", VLAN " + (n.vlan_id || "untagged"),
        ", MAC " + (n.mac_address || "—") + " (" + (n.mac_type || "?") + ")",
        n.legacy ? ", legacy" : "",
        ", spoofing " + (n.mac_spoofing ? "on" : "off") + ", DHCP guard " + (n.dhcp_guard ? "on" : "off") + ", router guard " + (n.router_guard ? "on" : "off"),
        ", bandwidth max " + fmtBps(n.maximum_bandwidth_bps) + " / min " + fmtBps(n.minimum_bandwidth_bps),
        " ",
        h("button", { type: "button", class: "btn btn-small", "data-nic-edit": n.id, disabled: !can || !n.id, onclick: () => (editor.hidden = !editor.hidden) }, "Change…"),
        " ",
        h(
          "button",
          {
            type: "button",
            class: "btn btn-small btn-danger",
            "data-nic-remove": n.id,
            disabled: !can || !n.id,
            onclick: async (e) => {
              const button = e.currentTarget;
              if (await confirmTyped(vm, "Remove adapter " + n.name, "This removes the network adapter " + n.name + " (" + n.mac_address + ") from VM " + vm.name + ".")) {
                submitChange("DELETE", base + "/" + encodeURIComponent(n.id), undefined, "Removal of adapter " + n.name, button);
              }
            },
          },
          "Remove…"
        ),
        editor
      );
    });
    section.appendChild(rows.length ? h("ul", { id: "nic-list" }, rows) : h("p", { class: "muted" }, "No network adapters."));
    const add = h(
      "form",
      { id: "nic-add", class: "inline-form", novalidate: true },
      h("label", { for: "nic-add-network" }, "Network"),
      " ",
      h("input", { id: "nic-add-network", name: "network", type: "text", placeholder: "default network" }),
      " ",
      h("label", { for: "nic-add-name" }, "Name"),
      " ",
      h("input", { id: "nic-add-name", name: "name", type: "text", placeholder: "Network Adapter" }),
      " ",
      h("button", { type: "submit", class: "btn", id: "nic-add-submit", disabled: !can }, "Add adapter")
    );
    add.addEventListener("submit", (e) => {
      e.preventDefault();
      const body = {};
      const network = $("nic-add-network").value.trim();
      const name = $("nic-add-name").value.trim();
      if (network) body.network = network;
      if (name) body.name = name;
      submitChange("POST", base, body, "New adapter", $("nic-add-submit"));
    });
    section.appendChild(add);
    return section;
  }

  function checkpointSection(vm) {
    const base = "/api/v1/vms/" + encodeURIComponent(vm.id) + "/checkpoints";
    const can = state.canWrite && !vm.busy_job && !vm.stale;
    const section = h(
      "section",
      { class: "panel", id: "checkpoint-section", "aria-labelledby": "cp-title" },
      h("h2", { id: "cp-title" }, "Checkpoints (" + (vm.checkpoint_count || 0) + ")"),
      vm.merge_percent !== null && vm.merge_percent !== undefined ? h("p", { class: "badge info" }, "Merging disks: " + vm.merge_percent + "%") : null
    );
    const tree = h("div", { id: "checkpoint-tree" }, h("p", { class: "loading" }, "Loading…"));
    section.appendChild(tree);
    const node = (c) =>
      h(
        "li",
        { class: "checkpoint", "data-checkpoint": c.id },
        h("strong", {}, c.name),
        " — " + c.type + ", " + fmtTime(c.creation_time) + " ",
        h(
          "button",
          {
            type: "button",
            class: "btn btn-small",
            "data-cp-apply": c.id,
            disabled: !can,
            onclick: async (e) => {
              const button = e.currentTarget;
              const off = vm.state === "Off" || vm.state === "Saved";
              const warning =
                "This reverts VM " + vm.name + " to checkpoint " + c.name + "; changes since then are lost." + (off ? "" : " The VM is " + vm.state + " and will be turned off first.");
              if (await confirmTyped(vm, "Apply checkpoint " + c.name, warning)) {
                submitChange("POST", base + "/" + encodeURIComponent(c.id) + "/apply", { force: !off }, "Apply of " + c.name, button);
              }
            },
          },
          "Apply…"
        ),
        " ",
        h(
          "button",
          {
            type: "button",
            class: "btn btn-small",
            "data-cp-rename": c.id,
            disabled: !can,
            onclick: (e) => {
              const name = window.prompt("New name for checkpoint " + c.name, c.name);
              if (name && name !== c.name) submitChange("PATCH", base + "/" + encodeURIComponent(c.id), { name }, "Rename of " + c.name, e.currentTarget);
            },
          },
          "Rename…"
        ),
        " ",
        h(
          "button",
          {
            type: "button",
            class: "btn btn-small btn-danger",
            "data-cp-delete": c.id,
            disabled: !can,
            onclick: (e) => submitChange("DELETE", base + "/" + encodeURIComponent(c.id), undefined, "Deletion of " + c.name, e.currentTarget),
          },
          "Delete"
        ),
        " ",
        h(
          "button",
          {
            type: "button",
            class: "btn btn-small btn-danger",
            "data-cp-delete-subtree": c.id,
            disabled: !can,
            onclick: async (e) => {
              const button = e.currentTarget;
              if (await confirmTyped(vm, "Delete checkpoint subtree " + c.name, "This deletes checkpoint " + c.name + " and every checkpoint taken after it; Hyper-V then merges the disks.")) {
                submitChange("DELETE", base + "/" + encodeURIComponent(c.id) + "?subtree=true", undefined, "Deletion of the subtree of " + c.name, button);
              }
            },
          },
          "Delete subtree…"
        ),
        (c.children || []).length ? h("ul", {}, c.children.map(node)) : null
      );
    guarded(() => api("GET", base)).then((data) => {
      clear(tree);
      if (!data) return;
      tree.appendChild(data.checkpoints.length ? h("ul", { id: "checkpoint-list" }, data.checkpoints.map(node)) : h("p", { class: "muted" }, "No checkpoints."));
    });
    const create = h(
      "form",
      { id: "cp-create", class: "inline-form", novalidate: true },
      h("label", { for: "cp-create-name" }, "Name"),
      " ",
      h("input", { id: "cp-create-name", name: "name", type: "text", placeholder: "before upgrade" }),
      " ",
      h("button", { type: "submit", class: "btn", id: "cp-create-submit", disabled: !can }, "Take checkpoint")
    );
    create.addEventListener("submit", (e) => {
      e.preventDefault();
      submitChange("POST", base, { name: $("cp-create-name").value }, "Checkpoint", $("cp-create-submit"));
    });
    section.appendChild(create);
    return section;
  }

  // ---------------------------------------------------------------------------------------------
  // Create VM: client-side validation mirrors the server's schema v1 rules

  const WINDOWS_PREFIXES = ["windows", "microsoft windows"];
  const LINUX_PREFIXES = ["ubuntu", "rhel", "centos", "rocky linux", "almalinux", "oracle linux", "debian", "suse", "opensuse", "fedora"];
  const MAX_VALUE_CHARS = 3000;

  function detectFamily(imageName) {
    const name = String(imageName || "").trimStart().toLowerCase();
    if (WINDOWS_PREFIXES.some((p) => name.startsWith(p))) return "windows";
    if (LINUX_PREFIXES.some((p) => name.startsWith(p))) return "linux";
    return null;
  }

  function parseIpv4(s) {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
    if (!m) return null;
    const parts = m.slice(1).map((p) => (p.length > 1 && p.startsWith("0") ? NaN : Number(p)));
    if (parts.some((p) => !(p >= 0 && p <= 255))) return null;
    return ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3];
  }

  function ipText(n) {
    return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
  }

  function intIn(value, min, max) {
    if (!/^\d+$/.test(value)) return "must be a whole number";
    const n = Number(value);
    if (n < min || n > max) return "must be between " + min + " and " + max + ", got " + n;
    return null;
  }

  /** Validates the form values (trimmed strings; secrets untrimmed) for `family`. Returns
   * `{field: message}`. */
  function validateCreate(v, family) {
    const errors = {};
    const fail = (field, message) => {
      if (!errors[field]) errors[field] = message;
    };
    const given = (field) => v[field] !== undefined && String(v[field]).trim() !== "";
    const control = /[\u0000-\u001f\u007f]/;

    if (!given("hyperv_host") && !given("target_cluster")) fail("hyperv_host", "is required: pick a connected host, or a cluster below");
    if (given("hyperv_host") && given("target_cluster")) fail("target_cluster", "give either a host or a cluster, not both");
    if (!given("image_name")) fail("image_name", "is required: pick an image");

    if (!given("vm_name")) fail("vm_name", "is required");
    else {
      const name = v.vm_name;
      if (name.length > 64) fail("vm_name", "must be at most 64 characters, got " + name.length);
      else if (!/^[A-Za-z0-9-]+$/.test(name)) fail("vm_name", "may contain only letters, digits and hyphens");
      else if (name.startsWith("-") || name.endsWith("-")) fail("vm_name", "must not start or end with a hyphen");
      else if (family === "windows" && name.length > 15) fail("vm_name", "must be at most 15 characters for a windows guest, got " + name.length);
      else if (family === "windows" && /^\d+$/.test(name)) fail("vm_name", "must not be only digits for a windows guest");
    }

    if (!given("gb_ram")) fail("gb_ram", "is required");
    else {
      const e = intIn(v.gb_ram, 1, 512);
      if (e) fail("gb_ram", e);
    }
    if (!given("cpu_cores")) fail("cpu_cores", "is required");
    else {
      const e = intIn(v.cpu_cores, 1, 64);
      if (e) fail("cpu_cores", e);
    }
    if (given("vlan_id")) {
      const e = intIn(v.vlan_id, 0, 4094);
      if (e) fail("vlan_id", e);
    }
    for (const f of ["network", "storage_class"]) {
      if (given(f) && v[f].length > 64) fail(f, "must be at most 64 characters");
    }
    if (given("disk_size_gb")) {
      const e = intIn(v.disk_size_gb, 1, 65536);
      if (e) fail("disk_size_gb", e);
    }

    if (!given("guest_la_uid")) fail("guest_la_uid", "is required");
    else {
      const uid = v.guest_la_uid;
      if (family === "windows") {
        if (uid.length > 20) fail("guest_la_uid", "must be at most 20 characters for a windows guest, got " + uid.length);
        else if (/["/\\[\]:;|=,+*?<>@]/.test(uid)) fail("guest_la_uid", 'must not contain any of " / \\ [ ] : ; | = , + * ? < > @ for a windows guest');
      } else if (family === "linux") {
        if (uid.length > 32) fail("guest_la_uid", "must be at most 32 characters for a linux guest, got " + uid.length);
        else if (/[\s:/]/.test(uid)) fail("guest_la_uid", "must not contain whitespace, ':' or '/' for a linux guest");
      }
    }
    if (!v.guest_la_pw) fail("guest_la_pw", "is required");
    else if (control.test(v.guest_la_pw)) fail("guest_la_pw", "must not contain control characters");
    else if (v.guest_la_pw.length > MAX_VALUE_CHARS) fail("guest_la_pw", "must be at most " + MAX_VALUE_CHARS + " characters");

    // Static IPv4: all-or-none.
    const ipFields = ["guest_v4_ipaddr", "guest_v4_cidrprefix", "guest_v4_defaultgw", "guest_v4_dns1", "guest_v4_dns2", "guest_net_dnssuffix"];
    if (ipFields.some(given)) {
      for (const f of ["guest_v4_ipaddr", "guest_v4_cidrprefix", "guest_v4_defaultgw", "guest_v4_dns1"]) {
        if (!given(f)) fail(f, "is required when any static IPv4 setting is given");
      }
      const addr = {};
      for (const f of ["guest_v4_ipaddr", "guest_v4_defaultgw", "guest_v4_dns1", "guest_v4_dns2"]) {
        if (!given(f)) continue;
        const n = parseIpv4(v[f]);
        if (n === null) fail(f, "must be an IPv4 address such as 192.0.2.10");
        else addr[f] = n;
      }
      let prefix = null;
      if (given("guest_v4_cidrprefix")) {
        const e = intIn(v.guest_v4_cidrprefix, 0, 32);
        if (e) fail("guest_v4_cidrprefix", e);
        else prefix = Number(v.guest_v4_cidrprefix);
      }
      if (given("guest_net_dnssuffix") && /\s/.test(v.guest_net_dnssuffix)) fail("guest_net_dnssuffix", "must not contain whitespace");
      const special = (n) => n === 0 || n >>> 24 === 127 || n >>> 28 === 14 || n === 0xffffffff;
      for (const f of ["guest_v4_ipaddr", "guest_v4_defaultgw"]) {
        if (addr[f] !== undefined && special(addr[f])) fail(f, "must be a unicast host address, got " + ipText(addr[f]));
      }
      for (const f of ["guest_v4_dns1", "guest_v4_dns2"]) {
        const n = addr[f];
        if (n !== undefined && (n === 0 || n >>> 28 === 14 || n === 0xffffffff)) fail(f, "must be a unicast address, got " + ipText(n));
      }
      if (addr.guest_v4_ipaddr !== undefined && prefix !== null) {
        const ip = addr.guest_v4_ipaddr;
        const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
        const network = (ip & mask) >>> 0;
        const broadcast = (network | (~mask >>> 0)) >>> 0;
        const subnet = ipText(network) + "/" + prefix;
        if (prefix <= 30 && ip === network) fail("guest_v4_ipaddr", "is the network address of " + subnet);
        else if (prefix <= 30 && ip === broadcast) fail("guest_v4_ipaddr", "is the broadcast address of " + subnet);
        const gw = addr.guest_v4_defaultgw;
        if (gw !== undefined) {
          if (((gw & mask) >>> 0) !== network) fail("guest_v4_defaultgw", "must be inside " + subnet + ", the subnet of the IP address");
          else if (gw === ip) fail("guest_v4_defaultgw", "must differ from the IP address");
        }
      }
    }

    if (family === "windows") {
      const dj = ["guest_domain_jointarget", "guest_domain_joinuid", "guest_domain_joinpw", "guest_domain_joinou"];
      if (dj.some(given)) {
        for (const f of ["guest_domain_jointarget", "guest_domain_joinuid", "guest_domain_joinpw"]) {
          if (!given(f)) fail(f, "is required when any domain join setting is given");
        }
        if (given("guest_domain_jointarget") && /\s/.test(v.guest_domain_jointarget)) fail("guest_domain_jointarget", "must not contain whitespace");
      }
    }
    if (family === "linux") {
      if (given("cnf_ansible_ssh_user") || given("cnf_ansible_ssh_key")) {
        for (const f of ["cnf_ansible_ssh_user", "cnf_ansible_ssh_key"]) {
          if (!given(f)) fail(f, "is required when any Ansible SSH setting is given");
        }
        if (given("cnf_ansible_ssh_user") && /\s/.test(v.cnf_ansible_ssh_user)) fail("cnf_ansible_ssh_user", "must not contain whitespace");
        if (given("cnf_ansible_ssh_key")) {
          const key = v.cnf_ansible_ssh_key;
          const words = key.split(/\s+/).filter(Boolean);
          if (key.includes("PRIVATE KEY")) fail("cnf_ansible_ssh_key", "looks like a private key; give the public key line (for example the contents of id_ed25519.pub)");
          else if (/[\r\n]/.test(key)) fail("cnf_ansible_ssh_key", "must be a single line");
          else if (!(words.length >= 2 && ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"].some((t) => words[0].startsWith(t))))
            fail("cnf_ansible_ssh_key", 'must be an OpenSSH public key line such as "ssh-ed25519 AAAA... comment"');
        }
      }
    }
    for (const [f, value] of Object.entries(v)) {
      if (typeof value === "string" && f !== "guest_la_pw" && f !== "guest_domain_joinpw") {
        if (control.test(value)) fail(f, "must not contain control characters");
        else if (value.length > MAX_VALUE_CHARS) fail(f, "must be at most " + MAX_VALUE_CHARS + " characters");
      }
    }
    return errors;
  }

  const CREATE_FIELDS = {
    main: [
      ["vm_name", "VM name", "text", "1–64 letters, digits and hyphens (at most 15 for Windows)"],
      ["gb_ram", "Memory (GiB)", "number", "1–512"],
      ["cpu_cores", "CPU cores", "number", "1–64"],
      ["disk_size_gb", "Disk size (GiB, optional)", "number", "1–65536; at least the image's size; the image's size when empty"],
      ["vlan_id", "VLAN (optional)", "number", "0–4094; 0 means untagged; overrides the network's VLAN"],
      ["network", "Network (optional)", "text", "a named network of the host; its default network (or only External switch) when empty"],
      ["storage_class", "Storage class (optional)", "text", "a named storage class of the host; its default VM path when empty"],
    ],
    admin: [
      ["guest_la_uid", "Local administrator user", "text", null],
      ["guest_la_pw", "Local administrator password", "password", null],
    ],
    ipv4: [
      ["guest_v4_ipaddr", "IPv4 address", "text", "e.g. 192.0.2.10"],
      ["guest_v4_cidrprefix", "Prefix length", "number", "0–32, e.g. 24"],
      ["guest_v4_defaultgw", "Default gateway", "text", "inside the subnet"],
      ["guest_v4_dns1", "DNS server 1", "text", null],
      ["guest_v4_dns2", "DNS server 2 (optional)", "text", null],
      ["guest_net_dnssuffix", "DNS suffix (optional)", "text", "e.g. corp.example"],
    ],
    domain: [
      ["guest_domain_jointarget", "Domain", "text", "e.g. corp.example"],
      ["guest_domain_joinuid", "Join account", "text", null],
      ["guest_domain_joinpw", "Join password", "password", null],
      ["guest_domain_joinou", "Organizational unit (optional)", "text", "e.g. OU=Servers,DC=corp,DC=example"],
    ],
    ssh: [
      ["cnf_ansible_ssh_user", "SSH user", "text", null],
      ["cnf_ansible_ssh_key", "SSH public key", "text", "one line, e.g. ssh-ed25519 AAAA… comment"],
    ],
  };

  const HIGHLIGHTED = "Please correct the highlighted fields.";

  function createView() {
    const main = $("main");
    let alive = true;
    const inputs = {};
    const errorNodes = {};
    let images = [];

    function fieldBlock(name, label, type, hint) {
      const id = "f-" + name;
      const errId = "err-" + name;
      const hintId = hint ? "hint-" + name : null;
      const attrs = { id, name, type: type === "number" ? "text" : type, autocomplete: type === "password" ? "new-password" : "off", spellcheck: "false" };
      if (type === "number") attrs.inputmode = "numeric";
      const input = h("input", attrs);
      input.setAttribute("aria-describedby", [hintId, errId].filter(Boolean).join(" "));
      inputs[name] = input;
      errorNodes[name] = h("p", { id: errId, class: "field-error" });
      input.addEventListener("input", () => {
        setFieldError(name, null);
        updateFormError();
      });
      return h(
        "div",
        { class: "field", "data-field": name },
        h("label", { for: id }, label),
        input,
        hint ? h("p", { id: hintId, class: "hint" }, hint) : null,
        errorNodes[name]
      );
    }

    function selectBlock(name, label, hint) {
      const id = "f-" + name;
      const errId = "err-" + name;
      const select = h("select", { id, name, "aria-describedby": errId + (hint ? " hint-" + name : "") });
      inputs[name] = select;
      errorNodes[name] = h("p", { id: errId, class: "field-error" });
      return h(
        "div",
        { class: "field", "data-field": name },
        h("label", { for: id }, label),
        select,
        hint ? h("p", { id: "hint-" + name, class: "hint" }, hint) : null,
        errorNodes[name]
      );
    }

    function setFieldError(name, message) {
      const input = inputs[name];
      const node = errorNodes[name];
      if (!input || !node) return false;
      node.textContent = message ? message : "";
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
      return true;
    }

    const hostBlock = selectBlock("hyperv_host", "Host", "connected hosts only");
    const clusterBlock = selectBlock("target_cluster", "Or a cluster", "the server picks the connected member with the most memory available that fits the VM");
    const clusterMembers = {};
    const imageBlock = selectBlock("image_name", "Image", null);
    const familyNote = h("p", { class: "hint", id: "os-family", "aria-live": "polite" });
    imageBlock.appendChild(familyNote);
    const clustered = h("input", { id: "f-vm_clustered", name: "vm_clustered", type: "checkbox" });
    const submit = h("button", { type: "submit", class: "btn btn-primary", id: "create-submit" }, "Create VM");
    const formError = h("p", { class: "field-error", id: "create-error", role: "alert" });

    const domainSet = h(
      "fieldset",
      { id: "group-domain", hidden: true },
      h("legend", {}, "Domain join (Windows, optional)"),
      h("p", { class: "hint" }, "Give domain, account and password together, or none of them."),
      h("div", { class: "form-grid" }, CREATE_FIELDS.domain.map((f) => fieldBlock(...f)))
    );
    const sshSet = h(
      "fieldset",
      { id: "group-ssh", hidden: true },
      h("legend", {}, "Ansible SSH access (Linux, optional)"),
      h("p", { class: "hint" }, "Give user and public key together, or neither."),
      h("div", { class: "form-grid" }, CREATE_FIELDS.ssh.map((f) => fieldBlock(...f)))
    );

    const form = h(
      "form",
      { id: "create-form", novalidate: true, "aria-labelledby": "create-title" },
      h(
        "fieldset",
        {},
        h("legend", {}, "Placement and size"),
        h("div", { class: "form-grid" }, hostBlock, clusterBlock, imageBlock, CREATE_FIELDS.main.map((f) => fieldBlock(...f))),
        h("div", { class: "field check" }, clustered, h("label", { for: "f-vm_clustered" }, "Clustered (highly available)"))
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Local administrator"),
        h("div", { class: "form-grid" }, CREATE_FIELDS.admin.map((f) => fieldBlock(...f)))
      ),
      h(
        "fieldset",
        { id: "group-ipv4" },
        h("legend", {}, "Static IPv4 (optional)"),
        h("p", { class: "hint" }, "Leave empty for DHCP. Address, prefix, gateway and DNS server 1 go together."),
        h("div", { class: "form-grid" }, CREATE_FIELDS.ipv4.map((f) => fieldBlock(...f)))
      ),
      domainSet,
      sshSet,
      formError,
      h("div", { class: "actions" }, submit, h("a", { class: "btn", href: "#/vms" }, "Cancel"))
    );
    inputs.gb_ram.value = "4";
    inputs.cpu_cores.value = "2";

    main.appendChild(h("h1", { id: "create-title" }, "Create VM"));
    if (!state.canWrite) {
      main.appendChild(h("p", { class: "error-box" }, "Your role (" + (state.me && state.me.role) + ") cannot create VMs."));
      return { name: "create" };
    }
    main.appendChild(form);

    function family() {
      const name = inputs.image_name.value;
      const image = images.find((i) => i.name === name);
      return (image && image.os_family) || detectFamily(name);
    }

    function updateFamily() {
      const f = family();
      familyNote.textContent = inputs.image_name.value ? (f ? "Operating system: " + f : "Operating system: unknown") : "";
      domainSet.hidden = f !== "windows";
      sshSet.hidden = f !== "linux";
    }

    async function loadHosts() {
      const data = await guarded(() => api("GET", "/api/v1/hosts"));
      if (!data || !alive) return;
      const select = inputs.hyperv_host;
      clear(select);
      const connected = (data.hosts || []).filter((x) => x.status === "connected").sort((a, b) => naturalCompare(a.name, b.name));
      select.appendChild(h("option", { value: "" }, connected.length ? "Choose a host…" : "No connected host"));
      for (const host of connected) {
        select.appendChild(h("option", { value: host.name }, host.name + (host.cluster ? " (" + host.cluster + ")" : "") + " — " + fmtBytes(host.memory_available_bytes) + " free"));
      }
      const wanted = hashQuery().get("host");
      if (wanted && connected.some((x) => x.name === wanted)) {
        select.value = wanted;
        loadImages();
      }
      const clusterSelect = inputs.target_cluster;
      clear(clusterSelect);
      const names = Array.from(new Set(connected.map((x) => x.cluster).filter(Boolean))).sort(naturalCompare);
      for (const name of names) clusterMembers[name] = connected.filter((x) => x.cluster === name).map((x) => x.name);
      clusterSelect.appendChild(h("option", { value: "" }, names.length ? "None: place on the host above" : "No cluster with a connected host"));
      for (const name of names) {
        clusterSelect.appendChild(h("option", { value: name }, name + " — " + clusterMembers[name].length + " connected host" + (clusterMembers[name].length === 1 ? "" : "s")));
      }
      clusterSelect.disabled = !names.length;
    }

    /** The host whose images the form offers: the chosen host, or a connected member of the
     * chosen cluster (placement also needs the image on the host it picks). */
    function imageHost() {
      const cluster = inputs.target_cluster.value;
      if (cluster) return (clusterMembers[cluster] || [])[0] || "";
      return inputs.hyperv_host.value;
    }

    let imageSeq = 0;
    async function loadImages() {
      const seq = ++imageSeq;
      const select = inputs.image_name;
      clear(select);
      images = [];
      const host = imageHost();
      if (!host) {
        select.appendChild(h("option", { value: "" }, "Choose a host or a cluster first"));
        updateFamily();
        return;
      }
      select.appendChild(h("option", { value: "" }, "Loading images…"));
      const data = await guarded(() => api("GET", "/api/v1/hosts/" + encodeURIComponent(host)));
      if (!alive || seq !== imageSeq) return;
      clear(select);
      images = ((data && data.facts && Array.isArray(data.facts.images) && data.facts.images) || []).slice().sort((a, b) => naturalCompare(a.name, b.name));
      select.appendChild(h("option", { value: "" }, images.length ? "Choose an image…" : "No images on this host"));
      for (const image of images) {
        const fam = image.os_family || detectFamily(image.name);
        select.appendChild(
          h("option", { value: image.name, "data-os-family": fam || "" }, image.name + (fam ? " (" + fam + ")" : "") + (image.max_size_bytes ? " — " + fmtBytes(image.max_size_bytes) : ""))
        );
      }
      updateFamily();
    }

    inputs.hyperv_host.addEventListener("change", () => {
      setFieldError("hyperv_host", null);
      updateFormError();
      loadImages();
    });
    inputs.target_cluster.addEventListener("change", () => {
      const cluster = inputs.target_cluster.value;
      setFieldError("target_cluster", null);
      setFieldError("hyperv_host", null);
      updateFormError();
      // A VM placed in a cluster is a cluster role, on the host the server picks.
      inputs.hyperv_host.disabled = !!cluster;
      if (cluster) inputs.hyperv_host.value = "";
      clustered.checked = clustered.checked || !!cluster;
      clustered.disabled = !!cluster;
      loadImages();
    });
    inputs.image_name.addEventListener("change", () => {
      setFieldError("image_name", null);
      updateFormError();
      updateFamily();
    });

    function collect() {
      const f = family();
      const values = {};
      const names = ["hyperv_host", "target_cluster", "image_name"]
        .concat(CREATE_FIELDS.main.map((x) => x[0]), CREATE_FIELDS.admin.map((x) => x[0]), CREATE_FIELDS.ipv4.map((x) => x[0]))
        .concat(f === "windows" ? CREATE_FIELDS.domain.map((x) => x[0]) : [])
        .concat(f === "linux" ? CREATE_FIELDS.ssh.map((x) => x[0]) : []);
      for (const name of names) {
        const raw = inputs[name].value;
        values[name] = name.endsWith("_pw") ? raw : raw.trim();
      }
      return { values, family: f };
    }

    function toBody(values, fam) {
      const body = {};
      for (const [k, v] of Object.entries(values)) {
        if (v === "") continue;
        body[k] = ["gb_ram", "cpu_cores", "disk_size_gb", "vlan_id", "guest_v4_cidrprefix"].includes(k) ? Number(v) : v;
      }
      body.vm_clustered = clustered.checked;
      if (fam && detectFamily(values.image_name) !== fam) body.os_family = fam;
      return body;
    }

    function showErrors(errors) {
      let first = null;
      const unplaced = [];
      for (const name of Object.keys(inputs)) setFieldError(name, null);
      for (const [name, message] of Object.entries(errors)) {
        if (setFieldError(name, message)) {
          if (!first) first = name;
        } else unplaced.push(name + ": " + message);
      }
      formError.textContent = unplaced.length ? unplaced.join("; ") : Object.keys(errors).length ? HIGHLIGHTED : "";
      // Focus the first invalid field as the page shows them (document order), not the order
      // the fields were built in.
      const invalid = Object.keys(errors)
        .map((n) => inputs[n])
        .filter((input) => input && !input.disabled && input.getClientRects().length);
      invalid.sort((a, b) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
      if (invalid.length) invalid[0].focus();
    }

    /** The summary under the form goes once the last highlighted field is fixed. */
    function updateFormError() {
      if (formError.textContent !== HIGHLIGHTED) return;
      if (!Object.values(inputs).some((input) => input.getAttribute("aria-invalid") === "true")) formError.textContent = "";
    }

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const { values, family: fam } = collect();
      const errors = validateCreate(values, fam);
      if (Object.keys(errors).length) {
        showErrors(errors);
        return;
      }
      showErrors({});
      submit.disabled = true;
      try {
        const result = await api("POST", "/api/v1/vms/create", toBody(values, fam));
        if (result && result.job_id) {
          toast("Provisioning of " + values.vm_name + " started");
          location.hash = "#/jobs/" + encodeURIComponent(result.job_id);
          return;
        }
      } catch (err) {
        if (err instanceof ApiFailure) {
          const problems = {};
          for (const d of err.details) {
            if (d && d.field) problems[String(d.field).replace(/^values\./, "")] = humanize(d.message);
          }
          if (!err.details.length && err.field) problems[String(err.field).replace(/^values\./, "")] = err.message;
          if (err.code === "vm_exists") problems.vm_name = err.message;
          if (Object.keys(problems).length) showErrors(problems);
          else formError.textContent = err.message;
          if (err.status !== 401 && err.status !== 403 && err.status !== 0) reportError(err);
        } else {
          formError.textContent = String(err);
        }
      }
      submit.disabled = false;
    });

    loadHosts().then(() => focusHeading(main));
    return {
      name: "create",
      cleanup() {
        alive = false;
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Jobs

  /** The label of a power action, derived from its API name (the one in the request and the job). */
  function actionLabel(name) {
    const found = ACTIONS.find(([action]) => action === name);
    return found ? found[1] : String(name);
  }

  function jobLabel(job) {
    return job.type === "power" && job.action ? "power: " + actionLabel(job.action) : job.type;
  }

  const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
  const JOB_PAGE_SIZE = 100;

  /** The job list's data source: one page of `GET /api/v1/jobs` (newest first) with `limit`,
   * an opaque `cursor` and the status filter; the answer is `{jobs, next_cursor, total}`. */
  async function fetchJobPage(query) {
    const params = new URLSearchParams();
    params.set("limit", String(query.limit));
    if (query.status) params.set("status", query.status);
    if (query.cursor) params.set("cursor", query.cursor);
    const data = await api("GET", "/api/v1/jobs?" + params.toString());
    const jobs = (data && data.jobs) || [];
    return { jobs, next: (data && data.next_cursor) || null, total: data && typeof data.total === "number" ? data.total : jobs.length };
  }

  // Whether a VM still exists, so a job of a deleted VM names it without a link to a page
  // that would say "VM not found". Answers are kept for a minute; vm_removed events update them.
  const vmExistence = new Map();
  const EXISTENCE_TTL_MS = 60000;

  function knownVmExists(id) {
    const known = vmExistence.get(id);
    return known && Date.now() - known.at < EXISTENCE_TTL_MS ? known.exists : undefined;
  }

  async function checkVmsExist(ids) {
    const unknown = Array.from(new Set(ids)).filter((id) => id && knownVmExists(id) === undefined);
    await runLimited(unknown, 4, async (id) => {
      try {
        await api("GET", "/api/v1/vms/" + encodeURIComponent(id));
        vmExistence.set(id, { exists: true, at: Date.now() });
      } catch (e) {
        if (e instanceof ApiFailure && e.status === 404) vmExistence.set(id, { exists: false, at: Date.now() });
      }
    });
  }

  /** The VM of a job: a link while the VM exists, its name alone once it is gone. */
  function jobVmNode(job, attrs) {
    const name = job.vm_name || job.vm_id || "—";
    if (!job.vm_id) return name;
    const exists = job.type === "delete" && job.status === "succeeded" ? false : knownVmExists(job.vm_id);
    if (exists === false) return h("span", Object.assign({ class: "vm-gone", title: "This VM no longer exists" }, attrs || {}), name, h("span", { class: "muted" }, " (deleted)"));
    return h("a", Object.assign({ href: "#/vms/" + encodeURIComponent(job.vm_id), class: "job-vm" }, attrs || {}), name);
  }

  function jobsView() {
    const main = $("main");
    let alive = true;
    let jobs = [];
    let next = null;
    let total = 0;
    const initial = hashQuery();
    const query = {
      status: JOB_STATUSES.includes(initial.get("status")) ? initial.get("status") : "",
      limit: JOB_PAGE_SIZE,
      cursor: initial.get("cursor") || "",
      page: Math.max(0, parseInt(initial.get("page") || "0", 10) || 0),
    };
    const entry = (history.state && history.state.jobs) || {};
    let prevCursors = Array.isArray(entry.prev) ? entry.prev.slice(0, query.page) : [];
    const statusSelect = h("select", { id: "filter-job-status" }, h("option", { value: "" }, "All"), JOB_STATUSES.map((s) => h("option", { value: s }, s)));
    statusSelect.value = query.status;
    const tbody = h("tbody");
    const countNode = h("p", { class: "count", id: "job-count", "aria-live": "polite" });
    const prevButton = h("button", { type: "button", class: "btn btn-small", id: "jobs-prev", onclick: () => goPrev() }, "Newer");
    const nextButton = h("button", { type: "button", class: "btn btn-small", id: "jobs-next", onclick: () => goNext() }, "Older");
    const pageInfo = h("span", { class: "count", id: "jobs-page-info" });
    const pager = h("nav", { class: "pager", "aria-label": "Pages of the job list", hidden: true }, prevButton, pageInfo, nextButton);
    main.appendChild(h("h1", {}, "Jobs"));
    main.appendChild(
      h(
        "form",
        { class: "filters", "aria-label": "Filter jobs", onsubmit: (e) => e.preventDefault() },
        h("div", { class: "field" }, h("label", { for: "filter-job-status" }, "Status"), statusSelect)
      )
    );
    main.appendChild(countNode);
    main.appendChild(
      h(
        "div",
        { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Job table" },
        h(
          "table",
          { id: "job-table" },
          h("thead", {}, h("tr", {}, ["Job", "Type", "VM", "Host", "Status", "Progress", "Created", "Finished"].map((c) => h("th", { scope: "col" }, c)))),
          tbody
        )
      )
    );
    main.appendChild(pager);

    function writeUrl() {
      const params = new URLSearchParams();
      if (query.status) params.set("status", query.status);
      if (query.cursor) {
        params.set("page", String(query.page));
        params.set("cursor", query.cursor);
      }
      const wanted = "#/jobs" + (params.toString() ? "?" + params.toString() : "");
      history.replaceState(Object.assign({}, history.state || {}, { jobs: { prev: prevCursors } }), "", wanted);
    }

    statusSelect.addEventListener("change", () => {
      query.status = statusSelect.value;
      query.cursor = "";
      query.page = 0;
      prevCursors = [];
      load();
    });

    function goNext() {
      if (!next) return;
      prevCursors.push(query.cursor);
      query.cursor = next;
      query.page += 1;
      load();
    }

    function goPrev() {
      query.cursor = prevCursors.pop() || "";
      query.page = query.cursor ? Math.max(0, query.page - 1) : 0;
      load();
    }

    let seq = 0;
    async function load() {
      const mine = ++seq;
      writeUrl();
      let page;
      try {
        page = await fetchJobPage(query);
      } catch (e) {
        if (!alive || mine !== seq) return;
        if (e instanceof ApiFailure && e.field === "cursor" && query.cursor) {
          query.cursor = "";
          query.page = 0;
          prevCursors = [];
          return load();
        }
        if (e instanceof ApiFailure && e.status !== 401 && e.status !== 403 && e.status !== 0) reportError(e);
        return;
      }
      if (!alive || mine !== seq) return;
      jobs = page.jobs;
      next = page.next;
      total = page.total;
      render();
      const unknown = jobs.filter((j) => j.vm_id && !(j.type === "delete" && j.status === "succeeded") && knownVmExists(j.vm_id) === undefined);
      if (!unknown.length) return;
      await checkVmsExist(unknown.map((j) => j.vm_id));
      if (alive && mine === seq && unknown.some((j) => knownVmExists(j.vm_id) === false)) render();
    }

    function render() {
      const fmt = (n) => n.toLocaleString("en-US");
      countNode.textContent = query.status ? fmt(total) + " " + query.status + (total === 1 ? " job" : " jobs") : fmt(total) + (total === 1 ? " job" : " jobs");
      const first = query.page * query.limit + 1;
      pageInfo.textContent = jobs.length ? fmt(first) + "–" + fmt(first + jobs.length - 1) + " of " + fmt(total) : "";
      prevButton.disabled = query.page === 0;
      nextButton.disabled = !next;
      pager.hidden = !next && query.page === 0;
      if (!jobs.length) {
        const text = query.status ? "No " + query.status + " jobs. " : "No jobs yet.";
        tbody.replaceChildren(
          h("tr", {}, h("td", { colspan: "8", class: "muted", id: "jobs-empty" }, text, query.status ? h("a", { href: "#/jobs", id: "jobs-show-all" }, "Show all jobs") : null))
        );
        return;
      }
      tbody.replaceChildren(
        ...jobs.map((job) =>
          h(
            "tr",
            { "data-job-id": job.id, "data-status": job.status },
            h("td", {}, h("a", { href: "#/jobs/" + encodeURIComponent(job.id), class: "job-link mono", "aria-label": "Job " + job.id }, shortId(job.id))),
            h("td", {}, jobLabel(job)),
            h("td", {}, jobVmNode(job)),
            h("td", {}, job.target_host || "—"),
            h("td", {}, jobStatusBadge(job.status)),
            h("td", {}, progressBar(job.percent, job.status, "Progress of job " + shortId(job.id))),
            h("td", {}, fmtTime(job.created_at)),
            h("td", {}, fmtTime(job.finished_at))
          )
        )
      );
    }

    const reload = debounce(load, 600);
    load().then(() => focusHeading(main));
    return {
      name: "jobs",
      applyBatch(batch) {
        let changed = false;
        let refetch = false;
        for (const [kind, data] of batch) {
          if (kind === "resync") refetch = true;
          else if (kind === "vm_removed" && data && data.id) {
            vmExistence.set(data.id, { exists: false, at: Date.now() });
            if (jobs.some((j) => j.vm_id === data.id)) changed = true;
          } else if (kind === "job" && data) {
            const job = jobs.find((j) => j.id === data.id);
            if (!job) {
              // A new job shows on the first page; an older page keeps what it shows.
              if (query.page === 0 && (!query.status || query.status === data.status)) refetch = true;
              continue;
            }
            Object.assign(job, { status: data.status, percent: data.percent });
            changed = true;
            if (query.status && query.status !== data.status) refetch = true;
            if (FINISHED.includes(data.status)) refetch = true;
          }
        }
        if (changed) render();
        if (refetch) reload();
      },
      cleanup() {
        alive = false;
      },
    };
  }

  const FINISHED = ["succeeded", "failed", "cancelled"];

  function jobDetailView(id) {
    const main = $("main");
    let alive = true;
    let job = null;
    let logSource = null;
    let lastJobJson = "";
    const seenSeq = new Set();

    const header = h("div", { id: "job-header" }, h("p", { class: "loading" }, "Loading…"));
    const timeline = h("ol", { class: "timeline", id: "job-steps" });
    const logList = h("ol", { class: "log", id: "job-log", "aria-label": "Job log", tabindex: "0" });
    const logNote = h("p", { class: "hint", id: "log-state" });
    main.appendChild(header);
    main.appendChild(h("section", { class: "panel", "aria-labelledby": "steps-title" }, h("h2", { id: "steps-title" }, "Steps"), timeline));
    main.appendChild(h("section", { class: "panel", "aria-labelledby": "log-title" }, h("h2", { id: "log-title" }, "Log"), logNote, logList));
    const extra = h("div", { id: "job-extra" });
    main.appendChild(extra);

    async function load() {
      let data;
      try {
        data = await api("GET", "/api/v1/jobs/" + encodeURIComponent(id));
      } catch (e) {
        if (!alive) return;
        clear(header);
        header.appendChild(h("h1", {}, "Job"));
        header.appendChild(h("p", { class: "error-text" }, e instanceof ApiFailure && e.status === 404 ? "No job with id " + id + " exists." : "Could not load the job: " + (e.message || String(e))));
        return;
      }
      if (!alive) return;
      const json = JSON.stringify(data);
      if (json === lastJobJson) return;
      lastJobJson = json;
      job = data;
      render();
      if (job.vm_id && knownVmExists(job.vm_id) === undefined) {
        await checkVmsExist([job.vm_id]);
        // Only a VM that is gone changes the page (its link becomes the bare name).
        if (alive && knownVmExists(job.vm_id) === false) render();
      }
    }

    async function cancel(button) {
      button.disabled = true;
      const result = await guarded(() => api("POST", "/api/v1/jobs/" + encodeURIComponent(id) + "/cancel"));
      if (result) toast("Cancellation requested");
      else button.disabled = false;
      load();
    }

    function render() {
      const hadFocus = document.activeElement && document.activeElement.id === "job-cancel";
      clear(header);
      const running = !FINISHED.includes(job.status);
      // A cancel someone asked for is an outcome, not an error: one calm line says so.
      const userCancelled = job.status === "cancelled" && job.cancel_requested;
      const title = jobLabel(job) + (job.vm_name ? " " + job.vm_name : "");
      header.appendChild(
        h("div", { class: "head-row" }, h("h1", {}, "Job: " + title), h("p", { class: "count" }, "id ", h("code", { id: "job-id" }, job.id)))
      );
      const cancelButton =
        running && state.canWrite
          ? h("button", { type: "button", class: "btn btn-danger", id: "job-cancel", disabled: job.cancel_requested, onclick: (e) => cancel(e.currentTarget) }, job.cancel_requested ? "Cancelling…" : "Cancel job")
          : null;
      header.appendChild(
        h(
          "section",
          { class: "panel", "aria-label": "Job status" },
          h("p", { class: "chips", "aria-live": "polite", id: "job-status-line" }, "Status: ", jobStatusBadge(job.status), job.step ? h("span", {}, " step: " + job.step) : null),
          progressBar(job.percent, job.status, "Job progress"),
          userCancelled ? h("p", { class: "note", id: "job-cancelled" }, "Cancelled at your request.") : null,
          job.message && !FINISHED.includes(job.status) ? h("p", { id: "job-message" }, humanize(job.message)) : null,
          h(
            "dl",
            { class: "kv" },
            h("dt", {}, "VM"),
            h("dd", {}, jobVmNode(job, { id: "job-vm-link" })),
            h("dt", {}, "Host"),
            h("dd", {}, job.target_host || "—"),
            h("dt", {}, "Created"),
            h("dd", {}, fmtTime(job.created_at)),
            h("dt", {}, "Started"),
            h("dd", {}, fmtTime(job.started_at)),
            h("dt", {}, "Finished"),
            h("dd", {}, fmtTime(job.finished_at))
          ),
          cancelButton ? h("div", { class: "actions" }, cancelButton) : null
        )
      );
      if (hadFocus && cancelButton && !cancelButton.disabled) cancelButton.focus();

      clear(timeline);
      const steps = job.steps || [];
      if (!steps.length) timeline.appendChild(h("li", { class: "muted" }, running ? "No step has started yet." : "No steps."));
      for (const step of steps) {
        timeline.appendChild(
          h(
            "li",
            { class: step.status, "data-step": step.name },
            h("span", { class: "step-name" }, step.name),
            jobStatusBadge(step.status),
            h("span", { class: "times" }, step.started_at ? fmtTime(step.started_at) + (step.finished_at ? " → " + fmtTime(step.finished_at) : "") : "not run")
          )
        );
      }

      clear(extra);
      if (job.error && !userCancelled) {
        extra.appendChild(h("section", { class: "error-box", id: "job-error", "aria-label": "Job error" }, h("strong", {}, "Error: "), humanize(job.error)));
      }
      if (job.cleanup) {
        const removed = job.cleanup.removed || [];
        const left = job.cleanup.left_behind || [];
        extra.appendChild(
          h(
            "section",
            { class: "panel", id: "job-cleanup", "aria-labelledby": "cleanup-title" },
            h("h2", { id: "cleanup-title" }, "Cleanup"),
            h("p", {}, removed.length ? "Removed: " : "Nothing removed.", removed.map((x) => (typeof x === "string" ? x : Object.values(x).join(" "))).join(", ")),
            left.length
              ? [h("p", { class: "error-text" }, "Left behind (remove by hand):"), h("ul", {}, left.map((x) => h("li", {}, h("code", {}, x.artifact || ""), " — ", x.reason || "")))]
              : null
          )
        );
      }
      if (job.result) {
        extra.appendChild(
          h(
            "section",
            { class: "panel", "aria-labelledby": "result-title" },
            h("h2", { id: "result-title" }, "Result"),
            h("div", { id: "job-result" }, typeof job.result === "object" ? kvList(job.result) : valueNode("result", job.result))
          )
        );
      }
      if (job.parameters && Object.keys(job.parameters).length) {
        extra.appendChild(
          h("section", { class: "panel", "aria-labelledby": "params-title" }, h("h2", { id: "params-title" }, "Parameters (secrets redacted)"), h("div", { id: "job-parameters" }, kvList(job.parameters)))
        );
      }
    }

    function addLog(line) {
      if (typeof line.seq === "number") {
        if (seenSeq.has(line.seq)) return;
        seenSeq.add(line.seq);
      }
      const atBottom = logList.scrollHeight - logList.scrollTop - logList.clientHeight < 30;
      logList.appendChild(
        h(
          "li",
          { class: line.level || "info" },
          h("span", { class: "at" }, line.at ? new Date(line.at).toLocaleTimeString() + " " : ""),
          line.level && line.level !== "info" ? line.level.toUpperCase() + " " : "",
          line.step ? "[" + line.step + "] " : "",
          humanize(line.message || "")
        )
      );
      if (atBottom) logList.scrollTop = logList.scrollHeight;
      schedulePlaceToasts();
    }

    const reload = debounce(load, 400);

    function follow() {
      logNote.textContent = "Following the live log…";
      const source = new EventSource("/api/v1/jobs/" + encodeURIComponent(id) + "/logs");
      logSource = source;
      const parse = (e) => {
        try {
          return JSON.parse(e.data);
        } catch (err) {
          return null;
        }
      };
      source.addEventListener("log", (e) => {
        const line = parse(e);
        if (line) addLog(line);
      });
      source.addEventListener("status", (e) => {
        const s = parse(e);
        if (s && job && (job.status !== s.status || job.percent !== s.percent || job.step !== s.step)) {
          Object.assign(job, { status: s.status, percent: s.percent, step: s.step });
          lastJobJson = "";
          render();
        }
        reload();
      });
      source.addEventListener("end", (e) => {
        source.close();
        logSource = null;
        const final = parse(e);
        logNote.textContent = "The job has ended; this is the complete log.";
        if (final && final.id && alive) {
          const json = JSON.stringify(final);
          if (json !== lastJobJson) {
            lastJobJson = json;
            job = final;
            render();
          }
        } else reload();
      });
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          logNote.textContent = "The live log is not available; showing the log so far.";
          logSource = null;
          loadLogOnce();
        }
      };
    }

    async function loadLogOnce() {
      const data = await guarded(() => api("GET", "/api/v1/jobs/" + encodeURIComponent(id) + "/logs?follow=false"));
      if (data && alive) for (const line of data.lines || []) addLog(line);
    }

    load().then(() => {
      focusHeading(main);
      if (alive && job) follow();
    });
    return {
      name: "job",
      refresh(kind, data) {
        if ((kind === "job" && data && data.id === id) || kind === "resync") reload();
      },
      cleanup() {
        alive = false;
        if (logSource) logSource.close();
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  async function start() {
    $("banner-close").addEventListener("click", hideBanner);
    setupDeleteDialog();
    try {
      setUser(await api("GET", "/api/v1/me"));
    } catch (e) {
      setUser(e instanceof ApiFailure && e.status === 401 ? { auth_enabled: true, subject: null, role: null, login_url: null } : null);
    }
    // The skip link moves focus without touching the hash, which the router owns.
    document.querySelector(".skip-link").addEventListener("click", (e) => {
      e.preventDefault();
      $("main").focus();
    });
    window.addEventListener("hashchange", () => {
      state.navigated = true;
      hideBanner();
      route();
    });
    // Views restore their own scroll position (the VM list after Back).
    if ("scrollRestoration" in history) history.scrollRestoration = "manual";
    document.addEventListener("keydown", onShortcut);
    setInterval(refreshRelativeTimes, 10000);
    route();
    connectEvents();
    showMode(await guarded(() => api("GET", "/api/v1/status")));
  }

  /** `/` focuses the search box (the VM list's, opening the list when another page shows). */
  function onShortcut(e) {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) return;
    const target = e.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
    if (document.querySelector("dialog[open]")) return;
    e.preventDefault();
    if (state.view && state.view.search) {
      state.view.search.focus();
      state.view.search.select();
      return;
    }
    state.focusSearch = true;
    location.hash = "#/vms";
  }

  // Exposed for the browser tests and for debugging in the console.
  window.aetherv = { validateCreate, detectFamily, parseIpv4, naturalCompare, fmtRelative, humanize, actionAllowed, painted: null, events: 0 };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
