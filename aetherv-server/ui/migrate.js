// Migrate on the VM page: a panel with a "Migrate…" button that opens a dialog listing the
// candidate hosts (POST /api/v1/placement: memory available and left after the move, refusals)
// and runs the compatibility check (POST /api/v1/vms/{id}/actions/migrate?dry_run=true) for the
// chosen host and mode before anything moves. "Migrate" queues the job and opens the job page,
// which follows it live. Loaded after app.js; app.js calls AethervMigrate.section(vm, kit) with
// its helpers (h, api, toast, fmtBytes, canWrite).
"use strict";
window.AethervMigrate = (function () {
  const MODES = [
    ["live", "Live (the VM keeps running)"],
    ["quick", "Quick (save, move, resume)"],
    ["shared_nothing", "Shared-nothing (host and storage)"],
    ["storage", "Storage only (same host)"],
  ];

  function val(id) {
    const el = document.getElementById(id);
    return el ? el.value.trim() : "";
  }

  function body(vm) {
    const mode = val("migrate-mode");
    const b = { mode: mode };
    if (mode !== "storage") b.target_host = val("migrate-target");
    const path = val("migrate-path");
    const cls = val("migrate-class");
    if (path) b.destination_path = path;
    else if (cls) b.storage_class = cls;
    return b;
  }

  function candidatesTable(kit, view) {
    const { h, fmtBytes } = kit;
    const rows = view.candidates.map((c) =>
      h(
        "tr",
        { "data-candidate": c.host },
        h("td", {}, String(c.rank)),
        h("td", {}, c.host),
        h("td", {}, fmtBytes(c.memory_available_bytes)),
        h("td", {}, fmtBytes(c.memory_after_bytes))
      )
    );
    const refused = view.refused.map((r) =>
      h("li", { "data-refused": r.host }, h("strong", {}, r.host), " — ", r.message)
    );
    return h(
      "div",
      { id: "migrate-candidates" },
      rows.length
        ? h(
            "table",
            { class: "table" },
            h("thead", {}, h("tr", {}, ["#", "Host", "Free memory", "Free after the move"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, rows)
          )
        : h("p", { class: "muted" }, "No host can take this VM now."),
      refused.length ? h("details", {}, h("summary", {}, "Hosts that cannot take it (" + refused.length + ")"), h("ul", {}, refused)) : null
    );
  }

  function showCheck(kit, result, view) {
    const { h } = kit;
    result.replaceChildren(
      view.compatible
        ? h("p", { class: "ok-text", id: "migrate-compatible" }, "Compatible: " + view.vm_name + " can move to " + view.target_host + (view.destination_path ? " (files to " + view.destination_path + ")" : "") + ".")
        : h(
            "div",
            { id: "migrate-incompatible", role: "alert" },
            h("p", { class: "error-text" }, view.vm_name + " cannot move to " + view.target_host + ":"),
            h("ul", {}, view.incompatibilities.map((i) => h("li", {}, i.message)))
          )
    );
  }

  function open(vm, kit) {
    const { h, api } = kit;
    const old = document.getElementById("migrate-dialog");
    if (old) old.remove();
    const memory = vm.memory_assigned_bytes || vm.memory_startup_bytes;
    const target = h("select", { id: "migrate-target" });
    const mode = h("select", { id: "migrate-mode" }, MODES.map(([v, label]) => h("option", { value: v }, label)));
    const list = h("div", { id: "migrate-list" }, h("p", { class: "loading" }, "Loading candidates…"));
    const result = h("div", { id: "migrate-check", "aria-live": "polite" });
    const error = h("p", { class: "error-text", id: "migrate-error", role: "alert" });
    const check = h("button", { type: "button", class: "btn", id: "migrate-run-check" }, "Check compatibility");
    const submit = h("button", { type: "submit", class: "btn btn-primary", id: "migrate-submit", disabled: true }, "Migrate");
    const form = h(
      "form",
      { method: "dialog", novalidate: true },
      h("h2", {}, "Migrate " + vm.name),
      h("p", { class: "hint" }, "From " + vm.host + (vm.clustered ? " (a cluster role: it moves within cluster " + (vm.cluster || "") + ")" : "") + "."),
      h("div", { class: "field" }, h("label", { for: "migrate-mode" }, "Mode"), mode),
      h("div", { class: "field", id: "migrate-target-field" }, h("label", { for: "migrate-target" }, "Target host"), target),
      h("div", { class: "field" }, h("label", { for: "migrate-path" }, "Destination folder (optional)"), h("input", { id: "migrate-path", type: "text", placeholder: "D:\\Hyper-V\\" + vm.name })),
      h("div", { class: "field" }, h("label", { for: "migrate-class" }, "Or storage class (optional)"), h("input", { id: "migrate-class", type: "text" })),
      list,
      result,
      error,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "btn", id: "migrate-cancel", onclick: () => dlg.close() }, "Cancel"),
        check,
        submit
      )
    );
    const dlg = h("dialog", { id: "migrate-dialog", "aria-label": "Migrate " + vm.name }, form);
    const invalidate = () => {
      submit.disabled = true;
      result.replaceChildren();
      error.textContent = "";
    };
    const onMode = () => {
      document.getElementById("migrate-target-field").hidden = mode.value === "storage";
      invalidate();
    };
    mode.addEventListener("change", onMode);
    target.addEventListener("change", invalidate);
    ["migrate-path", "migrate-class"].forEach((id) => form.querySelector("#" + id).addEventListener("input", invalidate));

    const placement = { memory_bytes: memory, exclude: [vm.host] };
    if (vm.clustered && vm.cluster) placement.cluster = vm.cluster;
    api("POST", "/api/v1/placement", placement)
      .then((view) => {
        target.replaceChildren(
          ...view.candidates.map((c) => h("option", { value: c.host }, c.host + " — " + kit.fmtBytes(c.memory_available_bytes) + " free")),
          ...view.refused
            .filter((r) => r.reason !== "unfit")
            .map((r) => h("option", { value: r.host, disabled: true }, r.host + " — " + r.message))
        );
        list.replaceChildren(candidatesTable(kit, view));
      })
      .catch((failure) => list.replaceChildren(h("p", { class: "error-text" }, "Candidates unavailable: " + ((failure && failure.message) || failure))));

    check.addEventListener("click", async () => {
      invalidate();
      check.disabled = true;
      try {
        const view = await api("POST", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/actions/migrate?dry_run=true", body(vm));
        showCheck(kit, result, view);
        submit.disabled = !view.compatible;
      } catch (failure) {
        error.textContent = (failure && failure.message) || String(failure);
      } finally {
        check.disabled = false;
      }
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      try {
        const queued = await api("POST", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/actions/migrate", body(vm));
        dlg.close();
        kit.toast("Migrate " + vm.name + ": job queued");
        location.hash = "#/jobs/" + encodeURIComponent(queued.job_id);
      } catch (failure) {
        error.textContent = (failure && failure.message) || String(failure);
      }
    });
    document.body.appendChild(dlg);
    onMode();
    dlg.showModal();
    return dlg;
  }

  function section(vm, kit) {
    const { h } = kit;
    const busy = !!vm.busy_job || !kit.canWrite || vm.stale;
    return h(
      "section",
      { class: "panel", "aria-labelledby": "migrate-title", id: "vm-migrate" },
      h("h2", { id: "migrate-title" }, "Migration"),
      h("p", {}, "Runs on " + vm.host + (vm.cluster ? " (cluster " + vm.cluster + ")" : "") + "."),
      h("button", { type: "button", class: "btn", id: "migrate-vm", disabled: busy, onclick: () => open(vm, kit) }, "Migrate…")
    );
  }

  return { section: section, open: open };
})();
