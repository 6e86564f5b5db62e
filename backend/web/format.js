// Presentation of task fields: dates in the task's own time zone, reminders, the recurrence
// badge (the words come from the API's summary), and wall-clock <-> instant conversion.

const DAY_MS = 86_400_000;

// The wall-clock parts of `date` in `zone`.
function parts(date, zone) {
  const fmt = new Intl.DateTimeFormat("en-GB", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  });
  const p = Object.fromEntries(fmt.formatToParts(date).map((x) => [x.type, x.value]));
  return { y: +p.year, m: +p.month, d: +p.day, h: +p.hour, min: +p.minute };
}

const dayNumber = ({ y, m, d }) => Date.UTC(y, m - 1, d) / DAY_MS;
const pad = (n) => String(n).padStart(2, "0");

// "today 09:00", "tomorrow 09:00", "yesterday 18:30", "Mon 09:00" within the week ahead,
// else "12 Jan 2027 09:00"; all on the task's wall clock.
export function dueText(iso, zone, now = new Date()) {
  const at = new Date(iso);
  const p = parts(at, zone);
  const time = `${pad(p.h)}:${pad(p.min)}`;
  const days = dayNumber(p) - dayNumber(parts(now, zone));
  if (days === 0) return `today ${time}`;
  if (days === 1) return `tomorrow ${time}`;
  if (days === -1) return `yesterday ${time}`;
  if (days > 1 && days < 7) {
    return `${at.toLocaleDateString("en-GB", { timeZone: zone, weekday: "short" })} ${time}`;
  }
  const date = at.toLocaleDateString("en-GB", { timeZone: zone, day: "numeric", month: "short", year: "numeric" });
  return `${date} ${time}`;
}

export function reminderText(minutes) {
  if (minutes === null || minutes === undefined) return null;
  if (minutes === 0) return "at the due time";
  if (minutes % 1440 === 0) return `${minutes / 1440} day${minutes === 1440 ? "" : "s"} before`;
  if (minutes % 60 === 0) return `${minutes / 60} h before`;
  return `${minutes} min before`;
}

const capitalised = (s) => s.charAt(0).toUpperCase() + s.slice(1);

// The badge of a recurring task: the API's summary, "3 of 10" for a counted series, and
// whether the series stopped.
export function recurrenceBadge(task) {
  const r = task.recurrence;
  if (!r) return null;
  const count = /(?:^|;)COUNT=(\d+)/.exec(r.rule || "");
  const total = count ? Number(count[1]) : null;
  let state = null;
  if (!r.active) state = "cancelled";
  else if (total !== null && task.occurrence >= total && task.completed) state = "ended";
  return {
    text: capitalised(r.summary),
    progress: total !== null ? `${task.occurrence} of ${total}` : null,
    state,
  };
}

// The instant (ISO, UTC) of wall-clock `local` ("2026-12-07T09:00") in `zone`.
export function instantOf(local, zone) {
  const [date, time] = local.split("T");
  const [y, m, d] = date.split("-").map(Number);
  const [h, min] = time.split(":").map(Number);
  const wanted = Date.UTC(y, m - 1, d, h, min);
  let guess = wanted;
  // Twice: the zone's offset may differ on either side of the first guess (DST).
  for (let i = 0; i < 2; i += 1) {
    const p = parts(new Date(guess), zone);
    guess += wanted - Date.UTC(p.y, p.m - 1, p.d, p.h, p.min);
  }
  return new Date(guess).toISOString();
}

// The wall-clock value for a datetime-local input of instant `iso` in `zone`.
export function localOf(iso, zone) {
  const p = parts(new Date(iso), zone);
  return `${p.y}-${pad(p.m)}-${pad(p.d)}T${pad(p.h)}:${pad(p.min)}`;
}

// A short absolute date for lists of coming dates: "Mon 7 Dec 2026, 09:00".
export function dateText(iso, zone) {
  return new Date(iso).toLocaleString("en-GB", {
    timeZone: zone, weekday: "short", day: "numeric", month: "short", year: "numeric",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  });
}
