// Day-2 sections of the VM page: Edit dialog, Disks with their actions, console details.
// Loaded after app.js; app.js calls AethervDay2.sections(vm, kit) from the VM page and passes
// its helpers (h, api, guarded, toast, fmtBytes, pathNode, canWrite). Every action queues a job and
// follows it live on the job page; destructive ones need the VM's name typed.
"use strict";
window.AethervDay2 = (function () {
  function dialog(kit, id, title, fields, submitLabel, onSubmit, confirmName) {
    const { h } = kit;
    const old = document.getElementById(id);
    if (old) old.remove();
    const error = h("p", { class: "error-text", id: id + "-error", role: "alert" });
    const submit = h("button", { type: "submit", class: "btn btn-primary", id: id + "-submit" }, submitLabel);
    const confirmInput = confirmName
      ? h("input", { id: id + "-confirm", type: "text", autocomplete: "off", spellcheck: "false" })
      : null;
    if (confirmInput) {
      submit.disabled = true;
      confirmInput.addEventListener("input", () => {
        submit.disabled = confirmInput.value !== confirmName;
      });
    }
    const form = h(
      "form",
      { method: "dialog", novalidate: true },
      h("h2", {}, title),
      fields,
      confirmInput
        ? h("div", { class: "field" }, h("label", { for: id + "-confirm" }, "Type " + confirmName + " to confirm"), confirmInput)
        : null,
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
      if (confirmInput && confirmInput.value !== confirmName) return;
      error.textContent = "";
      submit.disabled = true;
      try {
        const result = await kit.api.apply(null, onSubmit());
        dlg.close();
        if (result && result.job_id) {
          kit.toast(title + ": job queued");
          location.hash = "#/jobs/" + encodeURIComponent(result.job_id);
        }
      } catch (failure) {
        error.textContent = (failure && failure.message) || String(failure);
        submit.disabled = false;
      }
    });
    document.body.appendChild(dlg);
    dlg.showModal();
    return dlg;
  }

  function field(kit, id, label, attrs) {
    const { h } = kit;
    return h("div", { class: "field" }, h("label", { for: id }, label), h("input", Object.assign({ id: id }, attrs)));
  }

  function select(kit, id, label, options, value) {
    const { h } = kit;
    return h(
      "div",
      { class: "field" },
      h("label", { for: id }, label),
      h("select", { id: id }, options.map((o) => h("option", { value: o, selected: o === value ? true : null }, o)))
    );
  }

  function val(id) {
    const el = document.getElementById(id);
    return el ? el.value : "";
  }

  const MIB = 1024 * 1024;

  function openEdit(vm, kit) {
    const { h } = kit;
    const fields = [
      field(kit, "edit-cpus", "Processors", { type: "number", min: "1", max: "240", value: String(vm.processor_count) }),
      field(kit, "edit-memory", "Startup memory (MiB)", { type: "number", min: "32", step: "2", value: String(vm.memory_startup_bytes / MIB) }),
      select(kit, "edit-dynamic", "Dynamic memory", ["on", "off"], vm.dynamic_memory ? "on" : "off"),
      field(kit, "edit-min", "Dynamic minimum (MiB)", { type: "number", min: "32", step: "2", value: String(vm.memory_minimum_bytes / MIB) }),
      field(kit, "edit-max", "Dynamic maximum (MiB)", { type: "number", min: "32", step: "2", value: String(vm.memory_maximum_bytes / MIB) }),
      select(kit, "edit-start", "Automatic start action", ["nothing", "start_if_running", "start"], vm.automatic_start_action || "start_if_running"),
      select(kit, "edit-stop", "Automatic stop action", ["stop", "save", "shutdown"], vm.automatic_stop_action || "save"),
      h("div", { class: "field" }, h("label", { for: "edit-notes" }, "Notes"), h("textarea", { id: "edit-notes", rows: "3" }, vm.user_notes || "")),
      h("p", { class: "hint" }, "Processors, dynamic memory on/off and the stop action change only while the VM is Off; a running VM's memory only within its dynamic range."),
    ];
    dialog(kit, "edit-dialog", "Edit " + vm.name, fields, "Save", () => {
      // Only what differs is sent, so a running VM can still get notes or a start action.
      const body = {};
      const cpus = parseInt(val("edit-cpus"), 10);
      if (cpus !== vm.processor_count) body.processor_count = cpus;
      const dynamic = val("edit-dynamic") === "on";
      if (dynamic !== vm.dynamic_memory) body.dynamic_memory = dynamic;
      const memory = parseInt(val("edit-memory"), 10) * MIB;
      if (memory !== vm.memory_startup_bytes) body.memory_startup_bytes = memory;
      if (dynamic) {
        const min = parseInt(val("edit-min"), 10) * MIB;
        const max = parseInt(val("edit-max"), 10) * MIB;
        if (min !== vm.memory_minimum_bytes) body.memory_minimum_bytes = min;
        if (max !== vm.memory_maximum_bytes) body.memory_maximum_bytes = max;
      }
      if (val("edit-start") !== vm.automatic_start_action) body.automatic_start_action = val("edit-start");
      if (val("edit-stop") !== vm.automatic_stop_action) body.automatic_stop_action = val("edit-stop");
      if (val("edit-notes") !== (vm.user_notes || "")) body.notes = val("edit-notes");
      return ["PATCH", "/api/v1/vms/" + encodeURIComponent(vm.id), body];
    });
  }

  function openAddDisk(vm, kit) {
    const fields = [
      field(kit, "disk-size", "Size (GiB)", { type: "number", min: "1", value: "10" }),
      select(kit, "disk-type", "Type", ["dynamic", "fixed"], "dynamic"),
      field(kit, "disk-class", "Storage class (empty: the VM's folder)", { type: "text" }),
      field(kit, "disk-path", "Or attach an existing file (path)", { type: "text", placeholder: "C:\\VMs\\data.vhdx" }),
    ];
    dialog(kit, "disk-add-dialog", "Add a disk to " + vm.name, fields, "Add disk", () => {
      const path = val("disk-path").trim();
      const body = path
        ? { path: path }
        : { size_gb: parseInt(val("disk-size"), 10), type: val("disk-type") };
      if (!path && val("disk-class").trim()) body.storage_class = val("disk-class").trim();
      return ["POST", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/disks", body];
    });
  }

  function openExpand(vm, disk, kit) {
    const current = Math.ceil(disk.max_size_bytes / (1024 * MIB));
    const fields = [field(kit, "expand-size", "New size (GiB, at least " + current + ")", { type: "number", min: String(current), value: String(current + 10) })];
    dialog(kit, "disk-expand-dialog", "Expand disk " + disk.id, fields, "Expand", () => [
      "POST",
      "/api/v1/vms/" + encodeURIComponent(vm.id) + "/disks/" + encodeURIComponent(disk.id) + "/expand",
      { size_gb: parseInt(val("expand-size"), 10) },
    ]);
  }

  function openDetach(vm, disk, kit) {
    const { h } = kit;
    const fields = [
      h("p", {}, "Detach " + disk.path + " (" + disk.id + ") from " + vm.name + "."),
      h("div", { class: "field check" }, h("input", { id: "detach-delete", type: "checkbox" }), h("label", { for: "detach-delete" }, "Also delete the file")),
      h("div", { class: "field check" }, h("input", { id: "detach-force", type: "checkbox" }), h("label", { for: "detach-force" }, "Force (even the boot disk)")),
    ];
    dialog(
      kit,
      "disk-detach-dialog",
      "Detach disk " + disk.id,
      fields,
      "Detach",
      () => {
        const q = [];
        if (document.getElementById("detach-delete").checked) q.push("delete_file=true");
        if (document.getElementById("detach-force").checked) q.push("force=true");
        return ["DELETE", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/disks/" + encodeURIComponent(disk.id) + (q.length ? "?" + q.join("&") : ""), undefined];
      },
      vm.name
    );
  }

  function sections(vm, kit) {
    const { h, fmtBytes } = kit;
    const busy = !!vm.busy_job || !kit.canWrite || vm.stale;
    const wrap = h("div", { id: "vm-day2" });
    wrap.appendChild(
      h(
        "section",
        { class: "panel", "aria-labelledby": "settings-title", id: "vm-settings" },
        h("h2", { id: "settings-title" }, "Settings"),
        h(
          "dl",
          { class: "kv" },
          [
            ["Secure Boot", vm.secure_boot === null || vm.secure_boot === undefined ? "—" : vm.secure_boot ? "on (" + (vm.secure_boot_template || "") + ")" : "off"],
            ["Virtual TPM", vm.tpm_enabled === null || vm.tpm_enabled === undefined ? "—" : vm.tpm_enabled ? "on" : "off"],
            ["Automatic start", (vm.automatic_start_action || "—") + (vm.automatic_start_delay_seconds ? " after " + vm.automatic_start_delay_seconds + " s" : "")],
            ["Automatic stop", vm.automatic_stop_action || "—"],
            ["Notes", vm.user_notes || "—"],
          ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])
        ),
        h("button", { type: "button", class: "btn", id: "edit-vm", disabled: busy, onclick: () => openEdit(vm, kit) }, "Edit…")
      )
    );
    const disks = vm.disks || [];
    wrap.appendChild(
      h(
        "section",
        { class: "panel", "aria-labelledby": "disk-ops-title", id: "vm-disk-ops" },
        h("h2", { id: "disk-ops-title" }, "Disk actions"),
        h(
          "ul",
          {},
          disks.map((d) =>
            h(
              "li",
              { "data-disk": d.id || "" },
              h("code", {}, d.id || "?"),
              " ",
              d.path ? kit.pathNode(d.path) : "—",
              " — ",
              fmtBytes(d.max_size_bytes),
              d.shared ? " (shared)" : "",
              " ",
              h("button", { type: "button", class: "btn btn-small", "data-disk-action": "expand", disabled: busy || !d.id, onclick: () => openExpand(vm, d, kit) }, "Expand…"),
              " ",
              h("button", { type: "button", class: "btn btn-small btn-danger", "data-disk-action": "detach", disabled: busy || !d.id || d.shared, onclick: () => openDetach(vm, d, kit) }, "Detach…")
            )
          )
        ),
        h("button", { type: "button", class: "btn", id: "add-disk", disabled: busy, onclick: () => openAddDisk(vm, kit) }, "Add disk…")
      )
    );
    const consolePanel = h("section", { class: "panel", "aria-labelledby": "console-title", id: "vm-console" }, h("h2", { id: "console-title" }, "Console"), h("p", { class: "loading" }, "Loading…"));
    wrap.appendChild(consolePanel);
    kit
      .api("GET", "/api/v1/vms/" + encodeURIComponent(vm.id) + "/console")
      .then((c) => {
        consolePanel.replaceChildren(
          h("h2", { id: "console-title" }, "Console"),
          h("p", {}, "Virtual Machine Connection: ", h("code", { id: "console-vmconnect" }, c.vmconnect)),
          h("p", {}, "RDP: ", c.rdp_address ? h("code", { id: "console-rdp" }, c.rdp_address) : "no address reported yet")
        );
      })
      .catch(() => consolePanel.replaceChildren(h("h2", {}, "Console"), h("p", { class: "muted" }, "Console details unavailable.")));
    return wrap;
  }

  return { sections: sections };
})();
