// The Maintenance page (#/maintenance): every host's maintenance state, the maintenance runs
// with their per-host logs, starting a run over several hosts and cancelling one.
// Loaded before app.js; app.js routes #/maintenance to AethervMaintenance.view(kit).
"use strict";
window.AethervMaintenance = (function () {
  const RUN_HOST_CLASS = {
    pending: "off",
    draining: "info",
    in_maintenance: "warn",
    done: "ok",
    failed: "bad",
    skipped: "warn",
    cancelled: "warn",
  };

  function startForm(kit, hosts, reload) {
    const { h } = kit;
    const error = h("p", { class: "error-text", id: "run-error", role: "alert" });
    const boxes = hosts.map((host) =>
      h(
        "div",
        { class: "field check" },
        h("input", { type: "checkbox", id: "run-host-" + host.name, value: host.name, "data-run-host": host.name }),
        h("label", { for: "run-host-" + host.name }, host.name + (host.cluster ? " (" + host.cluster + ")" : ""))
      )
    );
    const perCluster = h("input", { id: "run-per-cluster", type: "number", min: "1", value: "1" });
    const evacuate = h(
      "select",
      { id: "run-evacuate" },
      h("option", { value: "live" }, "live"),
      h("option", { value: "none" }, "none (mark only)")
    );
    const reason = h("input", { id: "run-reason", type: "text", maxlength: "1024", autocomplete: "off" });
    const ticket = h("input", { id: "run-ticket", type: "text", maxlength: "1024", autocomplete: "off" });
    const submit = h("button", { type: "submit", class: "btn btn-primary", id: "run-start" }, "Start run");
    const form = h(
      "form",
      { id: "run-form", class: "panel", novalidate: true },
      h("h2", {}, "Start a maintenance run"),
      h("fieldset", {}, h("legend", {}, "Hosts, in order"), boxes),
      h("div", { class: "field" }, h("label", { for: "run-per-cluster" }, "Hosts of a cluster out at once"), perCluster),
      h("div", { class: "field" }, h("label", { for: "run-evacuate" }, "Evacuate"), evacuate),
      h("div", { class: "field" }, h("label", { for: "run-reason" }, "Reason"), reason),
      h("div", { class: "field" }, h("label", { for: "run-ticket" }, "Change ticket"), ticket),
      error,
      h("div", { class: "actions" }, submit)
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const chosen = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
      if (!chosen.length) {
        error.textContent = "Choose at least one host.";
        return;
      }
      error.textContent = "";
      submit.disabled = true;
      try {
        await kit.api("POST", "/api/v1/maintenance-runs", {
          hosts: chosen,
          max_per_cluster: Number(perCluster.value) || 1,
          evacuate: evacuate.value,
          reason: reason.value || null,
          ticket: ticket.value || null,
        });
        kit.toast("Maintenance run queued");
        reload();
      } catch (failure) {
        error.textContent = (failure && failure.message) || String(failure);
      }
      submit.disabled = false;
    });
    return form;
  }

  function runPanel(kit, run, reload) {
    const { h } = kit;
    const job = run.job || {};
    const running = job.status === "running" || job.status === "queued";
    const by = job.requested_by ? job.requested_by.name || job.requested_by.subject : "—";
    return h(
      "section",
      { class: "panel run", "data-run": run.id, "aria-label": "Maintenance run " + run.id.slice(0, 8) },
      h(
        "div",
        { class: "head-row" },
        h("h3", {}, h("a", { href: "#/jobs/" + encodeURIComponent(run.id) }, "Run " + run.id.slice(0, 8))),
        kit.jobStatusBadge(job.status),
        h("span", { class: "muted" }, " by " + by + " · " + kit.fmtTime(job.created_at)),
        running && kit.canWrite
          ? h(
              "button",
              {
                type: "button",
                class: "btn btn-small btn-danger cancel-run",
                "data-cancel-run": run.id,
                onclick: async () => {
                  if (!window.confirm("Cancel this maintenance run? Drains in progress stop; hosts in maintenance stay there.")) return;
                  await kit.guarded(() => kit.api("POST", "/api/v1/maintenance-runs/" + encodeURIComponent(run.id) + "/cancel"));
                  reload();
                },
              },
              "Cancel run"
            )
          : null
      ),
      job.error ? h("p", { class: "error-text" }, job.error) : null,
      h(
        "table",
        { class: "table run-hosts" },
        h("thead", {}, h("tr", {}, h("th", {}, "Host"), h("th", {}, "Status"), h("th", {}, "Drain job"), h("th", {}, "Waiting for"))),
        h(
          "tbody",
          {},
          (run.hosts || []).map((host) =>
            h(
              "tr",
              { "data-run-host": host.host },
              h("td", {}, h("a", { href: "#/hosts/" + encodeURIComponent(host.host) }, host.host)),
              h("td", {}, kit.badge(host.status, RUN_HOST_CLASS[host.status] || "", { "data-run-status": host.status })),
              h("td", {}, host.drain_job ? h("a", { href: "#/jobs/" + encodeURIComponent(host.drain_job) }, host.drain_job.slice(0, 8)) : "—"),
              h("td", {}, host.waiting || "")
            )
          )
        )
      ),
      (run.hosts || []).map((host) =>
        h(
          "details",
          { class: "host-log", "data-host-log": host.host },
          h("summary", {}, "Log of " + host.host + " (" + (host.log || []).length + " lines)"),
          h("pre", { class: "log" }, (host.log || []).join("\n"))
        )
      )
    );
  }

  function view(kit) {
    const { h, clear, api, guarded } = kit;
    const main = document.getElementById("main");
    main.appendChild(h("h1", {}, "Maintenance"));
    const body = h("div", { id: "maintenance-page" }, h("p", { class: "loading" }, "Loading…"));
    main.appendChild(body);
    let alive = true;
    let timer = null;
    let formShown = false;
    const formSlot = h("div", { id: "run-form-slot" });
    const listSlot = h("div", { id: "runs" });
    const hostsSlot = h("div", { id: "maintenance-hosts" });

    async function load() {
      const result = await guarded(() => Promise.all([api("GET", "/api/v1/hosts"), api("GET", "/api/v1/maintenance-runs")]));
      if (!result || !alive) return;
      const [hosts, runs] = result;
      if (body.querySelector(".loading")) {
        clear(body);
        body.appendChild(hostsSlot);
        body.appendChild(listSlot);
        body.appendChild(formSlot);
      }
      clear(hostsSlot);
      hostsSlot.appendChild(h("h2", {}, "Hosts"));
      hostsSlot.appendChild(
        h(
          "table",
          { class: "table" },
          h("thead", {}, h("tr", {}, h("th", {}, "Host"), h("th", {}, "Cluster"), h("th", {}, "State"), h("th", {}, "VMs"))),
          h(
            "tbody",
            {},
            (hosts.hosts || []).map((host) =>
              h(
                "tr",
                { "data-host": host.name },
                h("td", {}, h("a", { href: "#/hosts/" + encodeURIComponent(host.name) }, host.name)),
                h("td", {}, host.cluster || "—"),
                h("td", {}, window.AethervHosts ? window.AethervHosts.stateBadge(kit, host.maintenance_state) : host.maintenance_state),
                h("td", {}, String(host.vm_count))
              )
            )
          )
        )
      );
      clear(listSlot);
      listSlot.appendChild(h("h2", {}, "Runs"));
      const list = runs.runs || [];
      if (!list.length) listSlot.appendChild(h("p", { class: "muted", id: "no-runs" }, "No maintenance runs yet."));
      for (const run of list) listSlot.appendChild(runPanel(kit, run, load));
      if (kit.canWrite && !formShown) {
        formSlot.appendChild(startForm(kit, hosts.hosts || [], load));
        formShown = true;
      }
      if (timer) clearTimeout(timer);
      const active = list.some((r) => r.job && (r.job.status === "running" || r.job.status === "queued"));
      if (alive && active) timer = setTimeout(load, 1500);
      kit.focusHeading(main);
    }

    load();
    return {
      name: "maintenance",
      refresh(kind) {
        if (kind === "job" || kind === "resync" || kind === "host_connected" || kind === "host_disconnected") load();
      },
      cleanup() {
        alive = false;
        if (timer) clearTimeout(timer);
      },
    };
  }

  return { view };
})();
