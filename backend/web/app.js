// TaskFlow's page: sign-in, the task cards with their actions, filters, infinite scroll,
// notifications, and live updates from the stream.

import { call, ApiError, savedToken, saveToken, forgetToken, tokenUser } from "./api.js";
import { dueText, reminderText, recurrenceBadge, dateText } from "./format.js";
import { connect } from "./live.js";
import { setUpForm } from "./form.js";

const PAGE = 50;
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
};

let user = null;
let tasks = [];
let cursor = null;
let loading = false;
let firedReminders = new Map(); // task id -> fired reminder
// Next dates by task id and version ({ texts, pending }): a live refresh re-renders every card,
// and an open card must keep its dates rather than empty and refill them.
const nextDates = new Map();
let stopStream = null;
let refreshTimer = 0;
let openForm = null;

// ---- sign-in --------------------------------------------------------------------------------

function signedOut(message = "") {
  stopStream?.();
  stopStream = null;
  forgetToken();
  user = null;
  $("tasks").hidden = true;
  $("notifications").hidden = true;
  $("signed-in-actions").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("token-input").value = "";
  $("token-input").focus();
}

async function signIn(token) {
  const who = tokenUser(token.trim());
  if (!who) return signedOut("That is not a valid token: paste the whole JWT.");
  saveToken(token.trim());
  user = who;
  try {
    await call(`${base()}/tasks?limit=1`);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      return signedOut(`The token was not accepted: ${e.message}.`);
    }
    throw e;
  }
  $("sign-in").hidden = true;
  $("tasks").hidden = false;
  $("signed-in-actions").hidden = false;
  await refresh();
  loadNotifications();
  stopStream = connect(`${base()}/stream`, {
    token: savedToken(),
    onTask: scheduleRefresh,
    onResync: scheduleRefresh,
    onState: (state) => {
      $("live-state").textContent = state;
      $("live-state").dataset.state = state;
    },
    onUnauthorized: () => signedOut("Your session has expired: sign in again."),
  });
}

const base = () => `/api/${encodeURIComponent(user)}`;

// Any call that finds the token expired ends the session with that message.
async function guarded(work) {
  try {
    return await work();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) signedOut(`Your session has ended: ${e.message}.`);
    else status(e.message);
    return undefined;
  }
}

function status(text) {
  $("list-status").textContent = text;
}

// ---- the list -------------------------------------------------------------------------------

function query(limit, after) {
  const f = new FormData($("filters"));
  const q = new URLSearchParams({ status: f.get("status"), sort: f.get("sort"), limit: String(limit) });
  if (f.get("q").trim()) q.set("q", f.get("q").trim());
  if (f.get("priority")) q.set("priority", f.get("priority"));
  if (f.get("tag").trim()) q.set("tag", f.get("tag").trim());
  if (f.get("overdue")) q.set("overdue", "true");
  if (after) q.set("cursor", after);
  return q;
}

// Reload what is shown (as many as were loaded): the server filters and sorts.
async function refresh() {
  await guarded(async () => {
    const limit = Math.min(200, Math.max(PAGE, tasks.length));
    const [page, reminders] = await Promise.all([
      call(`${base()}/tasks?${query(limit)}`),
      call(`${base()}/reminders?status=fired`),
    ]);
    firedReminders = new Map(reminders.items.map((r) => [r.task_id, r]));
    tasks = page.items;
    cursor = page.next_cursor;
    render();
  });
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    refresh();
    loadNotifications();
  }, 150);
}

async function loadMore() {
  if (!cursor || loading) return;
  loading = true;
  await guarded(async () => {
    const page = await call(`${base()}/tasks?${query(PAGE, cursor)}`);
    tasks = tasks.concat(page.items);
    cursor = page.next_cursor;
    render();
  });
  loading = false;
}

function render() {
  const list = $("task-list");
  // Keep focus on the same control of the same card across a re-render.
  const active = document.activeElement;
  const focusKey = active?.closest?.(".card") && `${active.closest(".card").dataset.id}:${active.dataset.action}`;
  // A live update must not fold up the next dates someone is reading.
  const expanded = [...list.querySelectorAll(".card details[open]")].map((d) => d.closest(".card").dataset.id);
  list.replaceChildren(...tasks.map(card));
  for (const id of expanded) {
    const details = list.querySelector(`.card[data-id="${id}"] details`);
    if (details) details.open = true;
  }
  status(tasks.length ? `${tasks.length}${cursor ? "+" : ""} task${tasks.length === 1 ? "" : "s"}` : "No tasks here yet.");
  if (focusKey) {
    const [id, action] = focusKey.split(":");
    list.querySelector(`.card[data-id="${id}"] [data-action="${action}"]`)?.focus();
  }
}

function card(task) {
  const overdue = !task.completed && task.due_at && new Date(task.due_at) < new Date();
  const badge = recurrenceBadge(task);
  const fired = firedReminders.get(task.id);
  const titleId = `t-${task.id}`;
  const meta = el("p", { className: "meta" },
    task.priority !== "none" && el("span", { className: `priority p-${task.priority}`, textContent: task.priority }),
    task.due_at && el("span", { className: overdue ? "due overdue" : "due", textContent: `${overdue ? "Overdue · " : "Due "}${dueText(task.due_at, task.timezone)}` }),
    task.reminder_minutes_before !== null && el("span", { className: "reminder", textContent: `Reminder ${reminderText(task.reminder_minutes_before)}` }),
  );
  const tags = task.tags.length ? el("ul", { className: "tags", ariaLabel: "tags" }, ...task.tags.map((t) => el("li", { textContent: t }))) : null;
  const actions = el("div", { className: "card-actions" },
    !task.completed && button("Complete", "complete", () => act(() => call(`${base()}/tasks/${task.id}/complete`, { method: "PATCH" }))),
    button("Edit", "edit", (e) => openForm(task, e.currentTarget)),
    task.recurrence?.active && button("Cancel recurrence", "cancel-recurrence", () => act(() => call(`${base()}/tasks/${task.id}/recurrence/cancel`, { method: "POST" }))),
    fired && !task.completed && button("Snooze 10 min", "snooze", () => act(() => call(`${base()}/reminders/${fired.id}/snooze`, { method: "POST", body: { minutes: 10 } }))),
    button("Delete", "delete", () => {
      if (window.confirm(`Delete "${task.title}"?`)) act(() => call(`${base()}/tasks/${task.id}`, { method: "DELETE" }));
    }),
  );
  for (const b of actions.querySelectorAll("button")) b.setAttribute("aria-describedby", titleId);
  const node = el("li", { className: `card${overdue ? " is-overdue" : ""}${task.completed ? " is-done" : ""}` },
    el("h3", { id: titleId, textContent: task.title }),
    task.description && el("p", { className: "excerpt", textContent: excerpt(task.description) }),
    meta,
    tags,
    badge && recurrence(task, badge),
    actions,
  );
  node.dataset.id = task.id;
  return node;
}

function recurrence(task, badge) {
  const summary = el("summary", {},
    el("span", { className: "icon", ariaHidden: "true", textContent: "↻" }),
    el("span", { className: "rule", textContent: badge.text }),
    badge.progress && el("span", { className: "progress", textContent: badge.progress }),
    badge.state && el("span", { className: `state s-${badge.state}`, textContent: badge.state }),
  );
  const box = el("details", { className: `recurrence${badge.state ? " stopped" : ""}` }, summary);
  const dates = el("ul", { className: "dates" });
  const known = nextDates.get(`${task.id}@${task.version}`)?.texts;
  if (known) dates.replaceChildren(...known.map((text) => el("li", { textContent: text })));
  box.append(dates);
  box.addEventListener("toggle", () => {
    if (box.open && !dates.childElementCount) showNext(task, dates);
  });
  return box;
}

// One request per task version, shared by every card rendered while it is on its way.
function occurrences(task) {
  const key = `${task.id}@${task.version}`;
  let entry = nextDates.get(key);
  if (!entry) {
    if (nextDates.size >= 500) nextDates.delete(nextDates.keys().next().value);
    entry = { texts: null };
    entry.pending = call(`${base()}/tasks/${task.id}/occurrences?limit=5`).then(
      (page) => {
        entry.texts = page.items.length
          ? page.items.map((o) => dateText(o.due_at, task.timezone))
          : ["No further dates: the series has ended."];
        return entry.texts;
      },
      (e) => {
        nextDates.delete(key); // a failure is not remembered: opening again retries
        throw e;
      },
    );
    nextDates.set(key, entry);
  }
  return entry.pending;
}

async function showNext(task, dates) {
  await guarded(async () => {
    const texts = await occurrences(task);
    dates.replaceChildren(...texts.map((text) => el("li", { textContent: text })));
  });
}

function excerpt(text) {
  return text.length > 160 ? `${text.slice(0, 157)}…` : text;
}

function button(label, action, onClick) {
  const b = el("button", { type: "button", textContent: label });
  b.dataset.action = action;
  b.addEventListener("click", onClick);
  return b;
}

async function act(work) {
  await guarded(async () => {
    await work();
    await refresh();
  });
}

// ---- notifications --------------------------------------------------------------------------

async function loadNotifications() {
  await guarded(async () => {
    const page = await call(`${base()}/notifications`);
    const unread = page.items.filter((n) => !n.read_at);
    $("unread").textContent = String(unread.length);
    $("notification-list").replaceChildren(...(page.items.length ? page.items.map(note) : [el("li", { textContent: "Nothing yet." })]));
  });
}

function note(n) {
  const item = el("li", { className: n.read_at ? "note" : "note unread" },
    el("p", { textContent: n.title }),
    el("p", { className: "help", textContent: `Reminder for ${dateText(n.due_at, Intl.DateTimeFormat().resolvedOptions().timeZone)}` }));
  if (!n.read_at) {
    item.append(button("Mark read", "read", () => guarded(async () => {
      await call(`${base()}/notifications/${n.id}/read`, { method: "POST" });
      await loadNotifications();
    })));
  }
  return item;
}

function toggleNotifications(open) {
  $("notifications").hidden = !open;
  $("notifications-button").setAttribute("aria-expanded", String(open));
  if (open) {
    loadNotifications();
    $("notifications-close").focus();
  } else {
    $("notifications-button").focus();
  }
}

// ---- wiring ---------------------------------------------------------------------------------

function start() {
  openForm = setUpForm({ user: () => user, onSaved: () => refresh() });
  $("sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token-input").value);
  });
  $("sign-out").addEventListener("click", () => signedOut());
  $("new-task").addEventListener("click", (e) => openForm(null, e.currentTarget));
  $("notifications-button").addEventListener("click", () => toggleNotifications($("notifications").hidden));
  $("notifications-close").addEventListener("click", () => toggleNotifications(false));
  let filterTimer = 0;
  const refilter = () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      tasks = [];
      refresh();
    }, 200);
  };
  $("filters").addEventListener("input", refilter);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }).observe($("more"));
  setInterval(() => user && loadNotifications(), 30_000);

  window.addEventListener("hashchange", () => {
    const token = tokenFromHash();
    if (token) {
      signedOut();
      signIn(token);
    }
  });
  const token = tokenFromHash() || savedToken();
  if (token) signIn(token);
  else signedOut();
}

// A token in the fragment (from ./dev up; never sent to the server) signs in, then leaves the
// address bar and the history.
function tokenFromHash() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) history.replaceState(null, "", location.pathname + location.search);
  return token;
}

start();
