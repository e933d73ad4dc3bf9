// The host page (#/hosts/{name}): state, capacity, VMs, jobs, and the maintenance actions
// (Enter maintenance, Resume) with the live progress of a drain per VM.
// Loaded before app.js; app.js routes #/hosts/{name} to AethervHosts.view(name, kit) and passes
// its helpers (h, clear, api, guarded, toast, fmtBytes, fmtTime, badge, jobStatusBadge,
// vmStateBadge, hostStatusBadge, capacity, progressBar, canWrite, focusHeading).
"use strict";
window.AethervHosts = (function () {
  const STATE_CLASS = {
    active: "ok",
    draining: "info",
    maintenance: "warn",
    resuming: "info",
    failed_drain: "bad",
  };
  const DISPOSITION_TEXT = {
    migrated: "moved",
    moved_by_cluster: "moved by the cluster",
    shut_down: "shut down",
    left_behind: "left behind",
    excluded: "excluded",
    failed_back: "moved back",
  };

  function stateBadge(kit, state) {
    const s = String(state || "active");
    return kit.badge(s, STATE_CLASS[s] || "", { "data-maintenance-state": s, class: "badge maintenance-state " + (STATE_CLASS[s] || "") });
  }

  /** A modal dialog with `fields`; `onSubmit` returns [method, path, body]. */
  function dialog(kit, id, title, fields, submitLabel, onSubmit, confirmName) {
    const { h } = kit;
    const old = document.getElementById(id);
    if (old) old.remove();
    const error = h("p", { class: "error-text", id: id + "-error", role: "alert" });
    const submit = h("button", { type: "submit", class: "btn btn-primary", id: id + "-submit" }, submitLabel);
    const confirmBox = h("div", { class: "field", id: id + "-confirm-box", hidden: true });
    const confirmInput = h("input", { id: id + "-confirm", type: "text", autocomplete: "off", spellcheck: "false" });
    confirmBox.appendChild(h("label", { for: id + "-confirm" }, "Type " + confirmName + " to confirm"));
    confirmBox.appendChild(confirmInput);
    const form = h(
      "form",
      { method: "dialog", novalidate: true },
      h("h2", {}, title),
      fields,
      confirmName ? confirmBox : null,
      error,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "btn", id: id + "-cancel", onclick: () => dlg.close() }, "Cancel"),
        submit
      )
    );
    const dlg = h("dialog", { id: id, "aria-label": title }, form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const [method, path, body, needsConfirm] = onSubmit();
      if (needsConfirm && confirmInput.value !== confirmName) {
        confirmBox.hidden = false;
        error.textContent = "Type " + confirmName + " to confirm: VMs that cannot move will be shut down.";
        confirmInput.focus();
        return;
      }
      error.textContent = "";
      submit.disabled = true;
      try {
        await kit.api(method, path, body);
        dlg.close();
        kit.toast(title + ": job queued");
      } catch (failure) {
        error.textContent = (failure && failure.message) || String(failure);
        submit.disabled = false;
      }
    });
    document.body.appendChild(dlg);
    dlg.showModal();
    return dlg;
  }

  function field(kit, id, label, input) {
    return kit.h("div", { class: "field" }, kit.h("label", { for: id }, label), input);
  }

  function enterDialog(kit, host) {
    const { h } = kit;
    const evacuate = h(
      "select",
      { id: "mnt-evacuate" },
      h("option", { value: "live" }, "live — move running VMs live (a VM that cannot move stays)"),
      h("option", { value: "shutdown" }, "shutdown — move live, shut down what cannot move"),
      h("option", { value: "none" }, "none — only mark the host (no new VMs)")
    );
    const parallel = h("input", { id: "mnt-parallel", type: "number", min: "1", max: "16", value: "2" });
    const reason = h("input", { id: "mnt-reason", type: "text", maxlength: "1024", autocomplete: "off" });
    const ticket = h("input", { id: "mnt-ticket", type: "text", maxlength: "1024", autocomplete: "off" });
    return dialog(
      kit,
      "maintenance-dialog",
      "Enter maintenance",
      [
        h("p", {}, "Drain " + host + ": each running VM moves to the host placement chooses."),
        field(kit, "mnt-evacuate", "Evacuate", evacuate),
        field(kit, "mnt-parallel", "Migrations at once", parallel),
        field(kit, "mnt-reason", "Reason", reason),
        field(kit, "mnt-ticket", "Change ticket", ticket),
      ],
      "Enter maintenance",
      () => [
        "POST",
        "/api/v1/hosts/" + encodeURIComponent(host) + "/maintenance",
        {
          evacuate: evacuate.value,
          max_parallel: Number(parallel.value) || 2,
          reason: reason.value || null,
          ticket: ticket.value || null,
        },
        evacuate.value === "shutdown",
      ],
      host
    );
  }

  function resumeDialog(kit, host) {
    const { h } = kit;
    const failback = h("input", { id: "resume-failback", type: "checkbox", checked: true });
    return dialog(
      kit,
      "resume-dialog",
      "Resume",
      [
        h("p", {}, "Bring " + host + " back: it takes new VMs again."),
        h("div", { class: "field check" }, failback, h("label", { for: "resume-failback" }, "Move the VMs the drain moved back here (failback)")),
      ],
      "Resume",
      () => ["POST", "/api/v1/hosts/" + encodeURIComponent(host) + "/resume", { failback: failback.checked }, false],
      null
    );
  }

  /** The per-VM table of a drain or resume: what the job reports so far. */
  function progressTable(kit, job) {
    const { h } = kit;
    const result = job.result || {};
    const rows = [];
    for (const vm of result.vms || []) {
      rows.push([vm.vm_name, DISPOSITION_TEXT[vm.disposition] || vm.disposition, vm.moved_to || "—", vm.reason || ""]);
    }
    for (const m of result.moving || []) {
      rows.push([m.vm_name, "moving", m.to_host, ""]);
    }
    for (const name of result.failed_back || []) rows.push([name, "moved back", "", ""]);
    for (const name of result.not_moved_back || []) rows.push([name, "not moved back", "", ""]);
    return h(
      "table",
      { class: "table drain-progress", id: "drain-progress" },
      h("thead", {}, h("tr", {}, h("th", {}, "VM"), h("th", {}, "What happened"), h("th", {}, "Host now"), h("th", {}, "Why"))),
      h(
        "tbody",
        {},
        rows.length
          ? rows.map((r) => h("tr", { "data-vm": r[0] }, r.map((c, i) => h("td", { class: i === 1 ? "disposition" : null }, c))))
          : h("tr", {}, h("td", { colspan: "4", class: "muted" }, "No VM has moved yet."))
      )
    );
  }

  function view(name, kit) {
    const { h, clear, api, guarded } = kit;
    const main = document.getElementById("main");
    const title = h("h1", {}, "Host " + name);
    const body = h("div", { id: "host-page", "data-host": name }, h("p", { class: "loading" }, "Loading…"));
    main.appendChild(title);
    main.appendChild(body);
    let alive = true;
    let timer = null;

    async function load() {
      const result = await guarded(() =>
        Promise.all([
          api("GET", "/api/v1/hosts/" + encodeURIComponent(name)),
          api("GET", "/api/v1/jobs?host=" + encodeURIComponent(name) + "&limit=20"),
        ])
      );
      if (!result || !alive) return;
      const [host, jobs] = result;
      let active = (jobs.jobs || []).find(
        (j) => (j.type === "drain" || j.type === "resume") && (j.status === "running" || j.status === "queued")
      );
      const last = (jobs.jobs || []).find((j) => j.type === "drain" || j.type === "resume");
      render(host, jobs.jobs || [], active || last || null);
      if (timer) clearTimeout(timer);
      if (alive && active) timer = setTimeout(load, 1000);
    }

    function render(host, jobs, maintenanceJob) {
      clear(body);
      const m = host.maintenance || { state: host.maintenance_state || "active", vms: [] };
      const stateNow = m.state || "active";
      body.appendChild(
        h(
          "div",
          { class: "head-row" },
          kit.hostStatusBadge(host.status),
          " ",
          stateBadge(kit, stateNow),
          host.cluster ? h("span", { class: "muted" }, " cluster " + host.cluster) : null,
          m.cluster_node_state ? h("span", { class: "muted" }, " · cluster node " + m.cluster_node_state) : null
        )
      );
      if (kit.canWrite) {
        body.appendChild(
          h(
            "div",
            { class: "actions host-actions" },
            h(
              "button",
              {
                type: "button",
                class: "btn",
                id: "enter-maintenance",
                disabled: stateNow === "draining" || stateNow === "resuming" ? true : null,
                onclick: () => enterDialog(kit, host.name),
              },
              "Enter maintenance"
            ),
            h(
              "button",
              {
                type: "button",
                class: "btn",
                id: "resume-host",
                disabled: stateNow === "active" || stateNow === "draining" ? true : null,
                onclick: () => resumeDialog(kit, host.name),
              },
              "Resume"
            )
          )
        );
      }
      if (stateNow !== "active") {
        body.appendChild(
          h(
            "dl",
            { class: "facts maintenance-facts" },
            h("dt", {}, "Since"),
            h("dd", {}, kit.fmtTime(m.since)),
            h("dt", {}, "Reason"),
            h("dd", {}, m.reason || "—"),
            h("dt", {}, "Ticket"),
            h("dd", {}, m.ticket || "—"),
            h("dt", {}, "Requested by"),
            h("dd", {}, m.requested_by || "—")
          )
        );
      }
      if (maintenanceJob) {
        body.appendChild(h("h2", {}, maintenanceJob.type === "drain" ? "Drain" : "Resume"));
        body.appendChild(
          h(
            "p",
            {},
            h("a", { href: "#/jobs/" + encodeURIComponent(maintenanceJob.id) }, "Job " + maintenanceJob.id.slice(0, 8)),
            " ",
            kit.jobStatusBadge(maintenanceJob.status),
            " ",
            maintenanceJob.message || ""
          )
        );
        body.appendChild(kit.progressBar(maintenanceJob.percent, maintenanceJob.status, "Maintenance progress"));
        body.appendChild(progressTable(kit, maintenanceJob));
      } else if ((m.vms || []).length) {
        body.appendChild(h("h2", {}, "Where the VMs went"));
        body.appendChild(progressTable(kit, { result: { vms: m.vms } }));
      }

      body.appendChild(h("h2", {}, "Capacity"));
      body.appendChild(
        kit.capacity(
          "Memory",
          host.memory_total_bytes - host.memory_available_bytes,
          host.memory_total_bytes,
          kit.fmtBytes(host.memory_available_bytes) + " free of " + kit.fmtBytes(host.memory_total_bytes)
        )
      );
      body.appendChild(
        kit.capacity(
          "Storage",
          host.storage_total_bytes - host.storage_free_bytes,
          host.storage_total_bytes,
          kit.fmtBytes(host.storage_free_bytes) + " free of " + kit.fmtBytes(host.storage_total_bytes)
        )
      );
      body.appendChild(h("p", { class: "muted" }, (host.logical_processors || "—") + " logical processors · " + (host.os_version || "")));

      const vms = host.vms || [];
      body.appendChild(h("h2", {}, "VMs (" + vms.length + ")"));
      body.appendChild(
        h(
          "table",
          { class: "table", id: "host-vms" },
          h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "State"), h("th", {}, "Memory"), h("th", {}, "CPUs"))),
          h(
            "tbody",
            {},
            vms
              .slice()
              .sort((a, b) => a.name.localeCompare(b.name))
              .map((vm) =>
                h(
                  "tr",
                  { "data-vm-id": vm.id },
                  h("td", {}, h("a", { href: "#/vms/" + encodeURIComponent(vm.id) }, vm.name)),
                  h("td", {}, kit.vmStateBadge(vm.state)),
                  h("td", {}, kit.fmtBytes(vm.memory_assigned_bytes || vm.memory_startup_bytes)),
                  h("td", {}, String(vm.processor_count))
                )
              )
          )
        )
      );

      body.appendChild(h("h2", {}, "Jobs"));
      body.appendChild(
        h(
          "table",
          { class: "table", id: "host-jobs" },
          h("thead", {}, h("tr", {}, h("th", {}, "Job"), h("th", {}, "Type"), h("th", {}, "Status"), h("th", {}, "Requested by"), h("th", {}, "Created"))),
          h(
            "tbody",
            {},
            jobs.map((j) =>
              h(
                "tr",
                {},
                h("td", {}, h("a", { href: "#/jobs/" + encodeURIComponent(j.id) }, j.id.slice(0, 8))),
                h("td", {}, j.type),
                h("td", {}, kit.jobStatusBadge(j.status)),
                h("td", {}, (j.requested_by && (j.requested_by.name || j.requested_by.subject)) || "—"),
                h("td", {}, kit.fmtTime(j.created_at))
              )
            )
          )
        )
      );
      kit.focusHeading(main);
    }

    load();
    return {
      name: "host",
      refresh(kind, data) {
        if (kind === "resync" || kind === "host_connected" || kind === "host_disconnected") load();
        else if (kind === "job" && data && String(data.target_host || "").toLowerCase() === name.toLowerCase()) load();
        else if ((kind === "vm_added" || kind === "vm_removed" || kind === "vm_changed") && data && String(data.host || "").toLowerCase() === name.toLowerCase()) load();
      },
      cleanup() {
        alive = false;
        if (timer) clearTimeout(timer);
      },
    };
  }

  return { view, stateBadge };
})();
