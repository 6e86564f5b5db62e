// The web UI in Debian's headless Chromium, driven by playwright-core, against a running stack
// (scripts/checks/web-ui.sh starts one). TASKFLOW_URL: the backend; JWT_SECRET: its HS256
// secret (tokens are minted here); SCREENSHOT_DIR: where the main states are saved.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const BASE = process.env.TASKFLOW_URL || "http://127.0.0.1:8000";
const SECRET = process.env.JWT_SECRET || "taskflow-dev-secret-change-me";
const SHOTS = process.env.SCREENSHOT_DIR || "target/ui-screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Every run its own user, so earlier runs' tasks never show up.
const USER = `e2e-${randomUUID().slice(0, 8)}`;

function jwt(sub, { ttl = 3600, secret = SECRET } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ typ: "JWT", alg: "HS256" })}.${b64({ sub, iat: now, exp: now + ttl })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}
const TOKEN = jwt(USER);

async function api(method, path, body) {
  const res = await fetch(`${BASE}/api/${USER}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status}`);
  return res.status === 204 ? null : res.json();
}

// The next Monday at least two days ahead in Europe/Berlin, 09:00, as a datetime-local value.
// Counted from three UTC days ahead: Berlin's date runs up to a day ahead of UTC's, and the card
// says "tomorrow" for a Monday one Berlin day away (this failed on a Saturday at 23:15 UTC).
function nextMonday() {
  const d = new Date(Date.now() + 3 * 86_400_000);
  while (d.getUTCDay() !== 1) d.setUTCDate(d.getUTCDate() + 1);
  return `${d.toISOString().slice(0, 10)}T09:00`;
}

let browser;
let page;
const problems = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  // No request leaves the origin, and nothing is refused by the CSP or fails in a script.
  page.on("request", (r) => {
    if (!r.url().startsWith(BASE) && !r.url().startsWith("data:")) problems.push(`external request ${r.url()}`);
  });
  page.on("console", (m) => {
    // The API's 4xx answers the tests provoke are logged by the browser too; they are expected.
    if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
});

after(async () => {
  await browser?.close();
});

const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
const card = (title) => page.locator(".card", { has: page.getByRole("heading", { name: title, exact: true }) });

test("an invalid or expired token shows why, and no tasks", async () => {
  await page.goto(`${BASE}/`);
  await page.getByLabel("Access token").fill(jwt(USER, { secret: "not-the-secret" }));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "signature is invalid" }).waitFor();
  await page.getByLabel("Access token").fill(jwt(USER, { ttl: -120 }));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "expired" }).waitFor();
  await page.getByLabel("Access token").fill("not a token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "not a valid token" }).waitFor();
  assert.equal(await page.locator("#tasks").isVisible(), false);
  await shot("invalid-token");
});

test("the page is served with a strict CSP", async () => {
  const res = await fetch(`${BASE}/`);
  const csp = res.headers.get("content-security-policy");
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
});

test("sign in with #token= keeps the token out of the address bar", async () => {
  await page.goto(`${BASE}/#token=${TOKEN}`);
  await page.getByRole("heading", { name: "Tasks" }).waitFor();
  await page.locator("#live-state", { hasText: "live" }).waitFor();
  assert.equal(new URL(page.url()).hash, "");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("taskflow.token")), TOKEN);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
});

test("a weekly task on Mon and Wed shows its badge and next dates", async () => {
  await page.getByRole("button", { name: "New task" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Title").fill("Water plants");
  await dialog.getByLabel("Description").fill("The ones on the balcony first");
  await dialog.getByLabel("Due").fill(nextMonday());
  await dialog.getByLabel("Time zone").fill("Europe/Berlin");
  await dialog.getByLabel("Reminder").selectOption("15");
  await dialog.getByLabel("Repeat").selectOption("weekly");
  await dialog.getByLabel("Mon").check();
  await dialog.getByLabel("Wed").check();
  // The live preview comes from the server's engine.
  await dialog.locator("#preview").filter({ hasText: "every week on Monday and Wednesday" }).waitFor();
  assert.equal(await dialog.locator("#preview li").count(), 5);
  await shot("form-preview");
  await dialog.getByRole("button", { name: "Save" }).click();

  const c = card("Water plants");
  await c.waitFor();
  assert.equal(await c.locator(".rule").textContent(), "Every week on Monday and Wednesday");
  await c.getByText("Reminder 15 min before").waitFor();
  await c.locator(".due", { hasText: /^Due (Mon|\d+ \w+ \d{4}) 09:00$/ }).waitFor();
  const asked = [];
  const count = (req) => req.url().includes("/occurrences") && asked.push(req.url());
  page.on("request", count);
  await c.locator("summary").click();
  await c.locator(".dates li").nth(4).waitFor();
  const dates = await c.locator(".dates li").allTextContents();
  assert.equal(dates.length, 5);
  assert.ok(dates.every((d) => /^(Mon|Wed)\b.*09:00$/.test(d)), dates.join(" | "));
  await shot("recurring-card");

  // A change elsewhere re-renders every card through the stream; the open card keeps its dates
  // (the same task version needs no second fetch).
  await api("POST", "/tasks", { title: "Buy soil" });
  await card("Buy soil").waitFor();
  assert.equal(await c.locator("details").getAttribute("open"), "");
  assert.deepEqual(await c.locator(".dates li").allTextContents(), dates);
  page.off("request", count);
  assert.equal(asked.length, 1, asked.join(" | "));
});

test("a task completed elsewhere is replaced by its next occurrence via the stream", async () => {
  const [task] = (await api("GET", "/tasks?q=water")).items;
  const started = Date.now();
  // Completed through the API, not the page: only the stream can tell the page.
  await api("PATCH", `/tasks/${task.id}/complete`);
  await page.locator(`.card[data-id="${task.id}"]`).waitFor({ state: "detached", timeout: 5000 });
  const next = card("Water plants");
  await next.waitFor({ timeout: Math.max(1, 5000 - (Date.now() - started)) });
  const id = await next.getAttribute("data-id");
  assert.notEqual(id, task.id);
  const shown = await api("GET", `/tasks/${id}`);
  assert.equal(shown.series_id, task.series_id);
  assert.equal(shown.occurrence, 2);
  console.log(`next occurrence shown ${Date.now() - started} ms after the completion`);
  await shot("next-occurrence");
});

test("cancelling the recurrence changes the badge", async () => {
  const c = card("Water plants");
  await c.getByRole("button", { name: "Cancel recurrence" }).click();
  await c.locator(".state", { hasText: "cancelled" }).waitFor();
  assert.equal(await c.getByRole("button", { name: "Cancel recurrence" }).count(), 0);
  await shot("cancelled");
});

test("a server-side 422 is shown at its field", async () => {
  await page.getByRole("button", { name: "New task" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Title").fill("x".repeat(201));
  await dialog.getByRole("button", { name: "Save" }).click();
  const error = dialog.locator("#e-title");
  await error.filter({ hasText: "200" }).waitFor();
  assert.equal(await dialog.getByLabel("Title").getAttribute("aria-invalid"), "true");
  // The field with the error has the focus, and the dialog stays open.
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-title");
  await shot("validation-error");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await dialog.waitFor({ state: "hidden" });
});

// Presses Tab until the focused element matches `selector` (at most 60 times).
async function tabTo(selector) {
  for (let i = 0; i < 60; i += 1) {
    await page.keyboard.press("Tab");
    if (await page.evaluate((s) => document.activeElement?.matches(s), selector)) return;
  }
  assert.fail(`Tab never reached ${selector}`);
}

test("keyboard only: create, complete and delete a task", async () => {
  await page.goto(`${BASE}/`);
  await page.getByRole("heading", { name: "Tasks" }).waitFor();
  await tabTo("#new-task");
  assert.ok(await page.evaluate(() => document.activeElement.matches(":focus-visible")));
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-title");
  await page.keyboard.type("Keyboard task");
  await page.keyboard.press("Tab");
  await page.keyboard.type("Typed without a mouse");
  await tabTo("#f-priority");
  await page.keyboard.press("ArrowDown"); // low
  await page.keyboard.press("ArrowDown"); // medium
  await tabTo("#f-tags");
  await page.keyboard.type("home, keys");
  await tabTo("#task-save");
  await page.keyboard.press("Enter");
  const c = card("Keyboard task");
  await c.waitFor();
  // Focus went back to the button that opened the dialog.
  assert.equal(await page.evaluate(() => document.activeElement.id), "new-task");
  assert.deepEqual(await c.locator(".tags li").allTextContents(), ["home", "keys"]);
  assert.equal(await c.locator(".priority").textContent(), "medium");

  const id = await c.getAttribute("data-id");
  await tabTo(`.card[data-id="${id}"] [data-action="complete"]`);
  await page.keyboard.press("Enter");
  await page.locator(`.card[data-id="${id}"]`).waitFor({ state: "detached" });

  // Completed tasks are one filter away.
  await tabTo("#filters select[name=status]");
  await page.keyboard.press("ArrowDown"); // completed
  const done = page.locator(`.card[data-id="${id}"].is-done`);
  await done.waitFor();
  page.once("dialog", (d) => d.accept());
  await tabTo(`.card[data-id="${id}"] [data-action="delete"]`);
  await page.keyboard.press("Enter");
  await done.waitFor({ state: "detached" });
  await shot("keyboard");
});

test("cards show priority, tags, overdue and the rule in words", async () => {
  const day = 86_400_000;
  const soon = new Date(Date.now() + 3 * day).toISOString();
  await api("POST", "/tasks", { title: "Pay rent", due_at: "2027-01-31T09:00:00Z", timezone: "Europe/Berlin", recurrence: "monthly", reminder_minutes_before: 1440, priority: "high", tags: ["home", "money"] });
  await api("POST", "/tasks", { title: "Stand-up", due_at: soon, timezone: "Europe/Berlin", recurrence: "weekdays", priority: "medium", tags: ["work"] });
  const course = await api("POST", "/tasks", { title: "Physio exercises", description: "Ten sessions, every other week", due_at: soon, recurrence: { rule: "FREQ=WEEKLY;INTERVAL=2;COUNT=10" }, reminder_minutes_before: 60 });
  await api("PATCH", `/tasks/${course.id}/complete`);
  await api("POST", "/tasks", { title: "Send the invoice", due_at: new Date(Date.now() - day).toISOString(), priority: "urgent", reminder_minutes_before: 15, tags: ["work"] });
  await page.selectOption("#filters select[name=status]", "pending");
  await card("Pay rent").locator(".rule", { hasText: "Every month on the last day" }).waitFor();
  await card("Stand-up").locator(".rule", { hasText: "Every weekday" }).waitFor();
  // The worker made occurrence 2 of the counted series.
  await card("Physio exercises").locator(".progress", { hasText: "2 of 10" }).waitFor({ timeout: 10_000 });
  const late = card("Send the invoice");
  await late.locator(".due.overdue", { hasText: "Overdue" }).waitFor();
  assert.match(await late.getAttribute("class"), /is-overdue/);
  await shot("overview");
});

test("phone width: nothing overflows sideways", async () => {
  await page.setViewportSize({ width: 375, height: 800 });
  await page.selectOption("#filters select[name=status]", "all");
  await card("Water plants").first().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the viewport`);
  await shot("phone");
  await page.setViewportSize({ width: 1100, height: 900 });
});

test("no external requests, CSP violations or script errors", () => {
  assert.deepEqual(problems, []);
});
