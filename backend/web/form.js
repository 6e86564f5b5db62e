// The create and edit dialog: fields, the recurrence and reminder pickers, the live preview of
// the next dates (from the server's own engine) and server validation errors at their fields.

import { call, ApiError } from "./api.js";
import { dateText, instantOf, localOf } from "./format.js";

const DAYS = [["MO", "Mon"], ["TU", "Tue"], ["WE", "Wed"], ["TH", "Thu"], ["FR", "Fri"], ["SA", "Sat"], ["SU", "Sun"]];
const REMINDERS = ["5", "15", "60", "1440"];
const $ = (id) => document.getElementById(id);

// `user` gives the signed-in user; the dialog is set up once and serves every session.
export function setUpForm({ user, onSaved }) {
  const dialog = $("task-dialog");
  const form = $("task-form");
  const days = $("f-days");
  let editing = null; // the task being edited, or null for a new one
  let initialRecurrence = "null";
  let opener = null;
  let previewTimer = 0;
  let previewSeq = 0;

  for (const [code, name] of DAYS) {
    const label = document.createElement("label");
    label.className = "check";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = code;
    box.name = "day";
    label.append(box, ` ${name}`);
    days.append(label);
  }
  const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : ["UTC"];
  $("zones").append(...zones.map((z) => Object.assign(document.createElement("option"), { value: z })));

  function showPickers() {
    const repeat = $("f-repeat").value;
    days.hidden = repeat !== "weekly";
    $("f-rule-field").hidden = repeat !== "custom";
    const custom = $("f-reminder").value === "custom";
    $("f-reminder-minutes").hidden = !custom;
    form.querySelector("label[for=f-reminder-minutes]").hidden = !custom;
  }

  // What the picker says, as the API's `recurrence` value (null: none).
  function recurrence() {
    const repeat = $("f-repeat").value;
    if (!repeat) return null;
    if (repeat === "weekly") {
      const chosen = [...days.querySelectorAll("input:checked")].map((b) => b.value);
      return chosen.length ? { rule: `FREQ=WEEKLY;BYDAY=${chosen.join(",")}` } : "weekly";
    }
    if (repeat === "custom") return { rule: $("f-rule").value.trim() };
    return repeat;
  }

  function dueAt() {
    const local = $("f-due").value;
    return local ? instantOf(local, zone()) : null;
  }

  function zone() {
    return $("f-timezone").value.trim() || "UTC";
  }

  function clearErrors() {
    for (const p of form.querySelectorAll(".error")) p.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  function showErrors(error) {
    clearErrors();
    const fields = Object.entries(error.fields || {});
    for (const [field, message] of fields) {
      const slot = form.querySelector(`.error[data-field="${field}"]`);
      if (slot) slot.textContent = message;
      const input = form.querySelector(`[aria-describedby~="e-${field}"]`);
      input?.setAttribute("aria-invalid", "true");
    }
    if (!fields.length) $("form-error").textContent = error.message;
    form.querySelector("[aria-invalid]")?.focus();
  }

  // Only the latest preview is shown: answers to earlier ones may arrive after it.
  async function preview() {
    const seq = ++previewSeq;
    const show = (error, ...nodes) => {
      if (seq !== previewSeq) return;
      $("e-recurrence").textContent = error;
      $("preview").replaceChildren(...nodes);
    };
    const value = recurrence();
    const due = dueAt();
    if (value === null || (value.rule !== undefined && !value.rule)) return show("");
    if (!due) return show("", "Set a due date to see the next dates.");
    try {
      const res = await call(`/api/${encodeURIComponent(user())}/recurrence/preview`, {
        method: "POST", body: { recurrence: value, due_at: due, timezone: zone(), limit: 5 },
      });
      const title = document.createElement("p");
      title.textContent = `${res.recurrence.summary}. Next:`;
      const list = document.createElement("ul");
      list.className = "dates";
      list.append(...res.items.map((o) => Object.assign(document.createElement("li"), { textContent: dateText(o.due_at, zone()) })));
      show("", title, list);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const fields = e.fields || {};
      show(fields.recurrence || Object.values(fields)[0] || e.message);
    }
  }

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 250);
  }

  function fill(task) {
    form.reset();
    clearErrors();
    previewSeq += 1; // an answer still on its way belongs to the dialog's last use
    $("preview").replaceChildren();
    const tz = task?.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    $("f-title").value = task?.title || "";
    $("f-description").value = task?.description || "";
    $("f-priority").value = task?.priority || "none";
    $("f-tags").value = (task?.tags || []).join(", ");
    $("f-timezone").value = tz;
    $("f-due").value = task?.due_at ? localOf(task.due_at, tz) : "";
    const minutes = task?.reminder_minutes_before;
    if (minutes === null || minutes === undefined) $("f-reminder").value = "";
    else if (REMINDERS.includes(String(minutes))) $("f-reminder").value = String(minutes);
    else {
      $("f-reminder").value = "custom";
      $("f-reminder-minutes").value = minutes;
    }
    fillRecurrence(task?.recurrence);
    showPickers();
    initialRecurrence = JSON.stringify(recurrence());
  }

  function fillRecurrence(r) {
    const rule = r?.active ? r.rule : null;
    const weekly = rule && /^FREQ=WEEKLY;BYDAY=([A-Z,]+)$/.exec(rule);
    if (!rule) $("f-repeat").value = "";
    else if (rule === "FREQ=DAILY") $("f-repeat").value = "daily";
    else if (rule === "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR") $("f-repeat").value = "weekdays";
    else if (weekly) {
      $("f-repeat").value = "weekly";
      const chosen = weekly[1].split(",");
      for (const box of days.querySelectorAll("input")) box.checked = chosen.includes(box.value);
    } else {
      $("f-repeat").value = "custom";
      $("f-rule").value = rule;
    }
  }

  function body() {
    const reminderChoice = $("f-reminder").value;
    const reminder = reminderChoice === "custom" ? Number($("f-reminder-minutes").value) : reminderChoice ? Number(reminderChoice) : null;
    const out = {
      title: $("f-title").value,
      description: $("f-description").value.trim() || null,
      priority: $("f-priority").value,
      tags: $("f-tags").value.split(",").map((t) => t.trim()).filter(Boolean),
      due_at: dueAt(),
      timezone: zone(),
      reminder_minutes_before: reminder,
    };
    const value = recurrence();
    // An unchanged schedule is left out of an edit: setting it again would restart the series.
    if (!editing || JSON.stringify(value) !== initialRecurrence) out.recurrence = value;
    if (!editing) for (const key of Object.keys(out)) if (out[key] === null) delete out[key];
    return out;
  }

  form.addEventListener("change", (e) => {
    showPickers();
    if (["f-repeat", "f-due", "f-timezone"].includes(e.target.id) || e.target.name === "day") schedulePreview();
  });
  $("f-rule").addEventListener("input", schedulePreview);
  $("task-cancel").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => opener?.focus());

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    $("form-error").textContent = "";
    const base = `/api/${encodeURIComponent(user())}/tasks`;
    try {
      const saved = editing
        ? await call(`${base}/${editing.id}`, { method: "PATCH", body: body(), headers: { "If-Match": String(editing.version) } })
        : await call(base, { method: "POST", body: body() });
      dialog.close();
      onSaved(saved);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showErrors(err);
    }
  });

  return function open(task, from) {
    editing = task || null;
    opener = from || null;
    $("task-dialog-title").textContent = task ? "Edit task" : "New task";
    fill(task);
    dialog.showModal();
    $("f-title").focus();
    if (task?.recurrence?.active) schedulePreview();
  };
}
