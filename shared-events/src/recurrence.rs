//! Recurring tasks: validating, normalising, describing and stepping repeat schedules.
//!
//! A client sends a shorthand (`"weekly"`), an RFC 5545 RRULE or a 6-field cron expression
//! ([`RecurrenceInput`]). [`Recurrence::parse`] turns it into the canonical stored form
//! ([`Recurrence`]), which later computes the due date of the next occurrence.
//!
//! Rules are expanded on the task's wall clock ("floating" local time, fed to the rrule
//! crate as if it were UTC) and only then mapped to real instants in the task's zone. That
//! keeps 09:00 at 09:00 across DST changes and makes DST gaps and overlaps our decision
//! rather than the iterator's.
//!
//! Everything here is pure: no clock, no I/O.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use cron::TimeUnitSpec;
use rrule::{RRule, RRuleError, RRuleSet, Unvalidated};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Longest rule or cron text accepted.
const MAX_TEXT_LEN: usize = 500;
const MAX_INTERVAL: u16 = 1000;
const MAX_COUNT: u32 = 10_000;
/// Instants outside these years are refused: the rrule and cron crates panic near chrono's
/// limits, and no real task is due there.
const MIN_YEAR: i32 = 1;
const MAX_YEAR: i32 = 9999;
/// Safety net on instances inspected per lookup. After fast-forwarding (see
/// [`RuleSpec::fast_forward`]) only about two periods are ever scanned.
const MAX_SCAN: usize = 100_000;

const SHORTHANDS: &str = "daily, weekdays, weekly, monthly, yearly";
const WORKWEEK: [Weekday; 5] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// How the next occurrence is anchored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Anchor {
    /// The schedule continues from the due dates (a late completion does not shift it).
    #[default]
    Due,
    /// The schedule restarts from the moment the occurrence was completed.
    Completion,
}

/// An RRULE as a client sends it: `{"rule": "FREQ=WEEKLY;BYDAY=MO", "anchor": "due"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RecurrenceRuleInput)]
pub struct RuleInput {
    /// RFC 5545 recurrence rule; the task's due date is its start, so no DTSTART.
    #[schema(example = "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE")]
    pub rule: String,
    /// `due` (default) or `completion`.
    #[serde(default)]
    pub anchor: Anchor,
}

/// A cron schedule as a client sends it: `{"cron": "0 0 9 * * Mon-Fri", "anchor": "due"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RecurrenceCronInput)]
pub struct CronInput {
    /// Six fields: second minute hour day-of-month month day-of-week (day names, e.g. Mon-Fri).
    /// Evaluated in the task's time zone.
    #[schema(example = "0 0 9 * * Mon-Fri")]
    pub cron: String,
    /// `due` (default) or `completion`.
    #[serde(default)]
    pub anchor: Anchor,
}

/// How a task repeats: a shorthand, an RRULE object or a cron object.
// `Deserialize` is written by hand so that a wrong shape gets a precise message instead of
// serde's "did not match any variant of untagged enum".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RecurrenceInput {
    /// `daily`, `weekdays`, `weekly`, `monthly` (on the due date's day of the month, or the
    /// month's last day when it is shorter) or `yearly`; case-insensitive.
    // Checked by `Recurrence::parse`, which reports unknown names.
    Shorthand(String),
    Rule(RuleInput),
    Cron(CronInput),
}

/// The normalised recurrence of a series: what is stored (jsonb) and what events carry, e.g.
/// `{"rule": "FREQ=MONTHLY;BYMONTHDAY=-1", "anchor": "due", "active": true,
/// "dtstart": "2026-01-31T09:00:00", "tzid": "Europe/Berlin"}` (`"cron"` instead of `"rule"`
/// for cron schedules; no `dtstart` for a series without due dates). The English summary is
/// presentation: [`RecurrenceView`] adds it for API responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    pub schedule: Schedule,
    pub anchor: Anchor,
    /// False once the series was cancelled: no further occurrences are created.
    pub active: bool,
    /// Where the schedule is expanded from: occurrences follow the series, not the previous
    /// occurrence (so a clamped month end or a DST-shifted time never carries forward).
    pub start: Option<SeriesStart>,
}

/// The series start: the local wall-clock due time of the occurrence the rule was set on, and
/// the zone it is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesStart {
    pub local: NaiveDateTime,
    pub tz: Tz,
}

impl SeriesStart {
    /// The start an occurrence due at `due` (in its zone) gives a series.
    pub fn at(due: DateTime<Tz>) -> Self {
        SeriesStart {
            local: whole_seconds(due.naive_local()),
            tz: due.timezone(),
        }
    }

    /// The real instant of the start (the rules for DST gaps and overlaps apply).
    pub fn instant(&self) -> Option<DateTime<Utc>> {
        resolve_local(self.tz, self.local)
    }
}

const DTSTART_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// The normalised schedule text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Canonical RRULE without the `RRULE:` prefix, e.g. `FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE`.
    Rule(String),
    /// Six cron fields separated by single spaces.
    Cron(String),
}

/// Why a recurrence was rejected. Messages are meant to be shown to API users as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    #[error("unknown shorthand '{0}'; expected one of {SHORTHANDS}")]
    UnknownShorthand(String),
    #[error("invalid RRULE: {0}")]
    InvalidRule(String),
    /// Carries the frequency name, e.g. `MINUTELY`.
    #[error("FREQ={0} is not supported: the shortest recurrence is hourly")]
    TooFrequent(String),
    /// Carries the number of fields found.
    #[error(
        "cron expressions need exactly 6 fields (sec min hour day-of-month month day-of-week), got {0}"
    )]
    CronFieldCount(usize),
    #[error("invalid cron expression: {0}")]
    InvalidCron(String),
    /// Carries the normalised expression.
    #[error(
        "cron schedule '{0}' fires more often than hourly; give a single second and a single \
         minute, e.g. '0 30 * * * *'"
    )]
    CronTooFrequent(String),
    #[error("recurrence needs due_at when anchor is 'due'")]
    DueRequired,
}

// ---------------------------------------------------------------------------------------------
// Recurrence
// ---------------------------------------------------------------------------------------------

impl Recurrence {
    /// Validate and normalise `input`. `due` is the task's due date in its own time zone
    /// (None if the task has none); it is the start of an RRULE series and fixes the day of
    /// the `monthly` shorthand.
    ///
    /// # Errors
    ///
    /// A [`RecurrenceError`] whose message names the problem, ready for the API response.
    pub fn parse(
        input: &RecurrenceInput,
        due: Option<DateTime<Tz>>,
    ) -> Result<Recurrence, RecurrenceError> {
        let (schedule, anchor) = match input {
            RecurrenceInput::Shorthand(name) => {
                (Schedule::Rule(shorthand(name, due)?), Anchor::Due)
            }
            RecurrenceInput::Rule(r) => (Schedule::Rule(validate_rule(&r.rule, due)?), r.anchor),
            RecurrenceInput::Cron(c) => (Schedule::Cron(validate_cron(&c.cron, due)?), c.anchor),
        };
        if anchor == Anchor::Due && due.is_none() {
            return Err(RecurrenceError::DueRequired);
        }
        Ok(Recurrence {
            schedule,
            anchor,
            active: true,
            start: due.map(SeriesStart::at),
        })
    }

    /// The same schedule restarted at an occurrence due at `due`: editing the rule, due date or
    /// zone of the pending occurrence changes the series from then on.
    #[must_use]
    pub fn restarted(&self, due: Option<DateTime<Tz>>) -> Recurrence {
        Recurrence {
            start: due.map(SeriesStart::at),
            ..self.clone()
        }
    }

    /// The due date of the occurrence after one due at `current_due` (None: no due date) that
    /// was completed at `completed_at`; the series start comes from [`Recurrence::start`]
    /// (the current occurrence when the series has none). See [`Recurrence::next_due`].
    #[must_use]
    pub fn next_occurrence(
        &self,
        current_due: Option<DateTime<Utc>>,
        completed_at: DateTime<Utc>,
        occurrence: u32,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        let current = current_due.unwrap_or(completed_at);
        let start = self.start.and_then(|s| s.instant()).unwrap_or(current);
        self.next_due(start, current, completed_at, occurrence, tz)
    }

    /// The next `n` due dates of the series after an occurrence due at `current_due`, as they
    /// come when each occurrence is completed on time.
    #[must_use]
    pub fn upcoming(
        &self,
        current_due: DateTime<Utc>,
        occurrence: u32,
        tz: Tz,
        n: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut dates = Vec::with_capacity(n);
        let (mut due, mut number) = (current_due, occurrence);
        while dates.len() < n {
            match self.next_occurrence(Some(due), due, number, tz) {
                Some(next) if next > due => {
                    dates.push(next);
                    due = next;
                    number += 1;
                }
                _ => break,
            }
        }
        dates
    }

    /// A short English description, e.g. "every 2 weeks on Monday and Wednesday".
    #[must_use]
    pub fn summary(&self) -> String {
        let mut text = match &self.schedule {
            Schedule::Rule(rule) => match RuleSpec::parse(rule) {
                Ok(spec) => spec.describe(),
                // Only reachable with a hand-edited stored value; still say something useful.
                Err(_) => format!("on the schedule '{rule}'"),
            },
            Schedule::Cron(cron) => format!("on the cron schedule '{cron}'"),
        };
        if self.anchor == Anchor::Completion {
            text.push_str(", counted from completion");
        }
        text
    }

    /// The due date of the next occurrence, or None when the series is exhausted
    /// (COUNT/UNTIL), inactive, or its stored schedule is unreadable.
    ///
    /// * `series_start`: due date of occurrence 1; its local time of day is kept.
    /// * `current_due`: due date of the occurrence being completed.
    /// * `completed_at`: when that occurrence was completed.
    /// * `occurrence`: its number, 1-based (COUNT=n allows occurrences 1..=n).
    /// * `tz`: the task's time zone; rules and cron are evaluated on its wall clock.
    ///
    /// With [`Anchor::Due`] the result is the first instance of the series (generated from
    /// `series_start`) strictly after `current_due`, even if that is already in the past.
    /// With [`Anchor::Completion`] the series is restarted on the completion day (at
    /// `series_start`'s time of day for daily and longer frequencies, at the completion
    /// minute for hourly ones); the instance on that restart point itself counts as the
    /// one just completed, so the result is the first later instance after `completed_at`.
    /// A cron schedule with [`Anchor::Completion`] gives its first fire after both
    /// `completed_at` and `current_due`.
    #[must_use]
    pub fn next_due(
        &self,
        series_start: DateTime<Utc>,
        current_due: DateTime<Utc>,
        completed_at: DateTime<Utc>,
        occurrence: u32,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        let in_range = |d: &DateTime<Utc>| (MIN_YEAR..=MAX_YEAR).contains(&d.year());
        if !self.active
            || ![series_start, current_due, completed_at]
                .iter()
                .all(in_range)
        {
            return None;
        }
        match &self.schedule {
            Schedule::Rule(text) => {
                let spec = RuleSpec::parse(text).ok()?;
                // Cheap, and spares a long fruitless search on a hand-edited stored rule.
                spec.check_satisfiable().ok()?;
                if spec.count.is_some_and(|count| occurrence >= count) {
                    return None;
                }
                match self.anchor {
                    Anchor::Due => spec.next_after_due(series_start, current_due, tz),
                    Anchor::Completion => {
                        spec.next_after_completion(series_start, completed_at, tz)
                    }
                }
            }
            Schedule::Cron(text) => {
                let (_, schedule) = parse_cron(text).ok()?;
                // A cron schedule has no interval to restart, so "from completion" means
                // skipping the fires missed while late; an early completion must not bring
                // back the occurrence it just completed.
                let after = match self.anchor {
                    Anchor::Due => current_due,
                    Anchor::Completion => completed_at.max(current_due),
                };
                // The cron crate only looks strictly after the given instant.
                let next = schedule.after(&after.with_timezone(&tz)).next()?;
                Some(next.with_timezone(&Utc))
            }
        }
    }
}

impl Serialize for Recurrence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Recurrence", 5)?;
        match &self.schedule {
            Schedule::Rule(rule) => s.serialize_field("rule", rule)?,
            Schedule::Cron(cron) => s.serialize_field("cron", cron)?,
        }
        s.serialize_field("anchor", &self.anchor)?;
        s.serialize_field("active", &self.active)?;
        if let Some(start) = &self.start {
            s.serialize_field("dtstart", &start.local.format(DTSTART_FORMAT).to_string())?;
            s.serialize_field("tzid", start.tz.name())?;
        }
        s.end()
    }
}

/// A recurrence as API responses show it: the stored form plus a human `summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecurrenceView {
    #[serde(flatten)]
    pub recurrence: Recurrence,
    pub summary: String,
}

impl From<Recurrence> for RecurrenceView {
    fn from(recurrence: Recurrence) -> Self {
        RecurrenceView {
            summary: recurrence.summary(),
            recurrence,
        }
    }
}

impl<'de> Deserialize<'de> for Recurrence {
    /// Reads the stored form. `active` defaults to true, `anchor` to due; `summary` and any
    /// other unknown keys are ignored so that rows written by newer code stay readable. The
    /// schedule text is not re-validated here (old rows must stay readable when validation
    /// tightens); [`Recurrence::next_due`] returns None for text it cannot read.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StoredVisitor;

        impl<'de> Visitor<'de> for StoredVisitor {
            type Value = Recurrence;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a stored recurrence object with \"rule\" or \"cron\"")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Recurrence, A::Error> {
                let mut rule: Option<String> = None;
                let mut cron: Option<String> = None;
                let mut anchor: Option<Anchor> = None;
                let mut active: Option<bool> = None;
                let mut dtstart: Option<String> = None;
                let mut tzid: Option<String> = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "rule" => set_once(&mut rule, "rule", map.next_value()?)?,
                        "cron" => set_once(&mut cron, "cron", map.next_value()?)?,
                        "anchor" => set_once(&mut anchor, "anchor", map.next_value()?)?,
                        "active" => set_once(&mut active, "active", map.next_value()?)?,
                        "dtstart" => set_once(&mut dtstart, "dtstart", map.next_value()?)?,
                        "tzid" => set_once(&mut tzid, "tzid", map.next_value()?)?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let start = match (dtstart, tzid) {
                    (None, None) => None,
                    (Some(local), Some(tz)) => Some(SeriesStart {
                        local: NaiveDateTime::parse_from_str(&local, DTSTART_FORMAT)
                            .map_err(|e| de::Error::custom(format!("dtstart {local:?}: {e}")))?,
                        tz: tz
                            .parse()
                            .map_err(|_| de::Error::custom(format!("unknown tzid {tz:?}")))?,
                    }),
                    _ => return Err(de::Error::custom("dtstart and tzid go together")),
                };
                Ok(Recurrence {
                    schedule: pick_schedule(rule, cron)?,
                    anchor: anchor.unwrap_or_default(),
                    active: active.unwrap_or(true),
                    start,
                })
            }
        }

        deserializer.deserialize_map(StoredVisitor)
    }
}

impl<'de> Deserialize<'de> for RecurrenceInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;

        const FIELDS: &[&str] = &["rule", "cron", "anchor"];

        impl<'de> Visitor<'de> for InputVisitor {
            type Value = RecurrenceInput;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a shorthand ({SHORTHANDS}) or an object with \"rule\" (RRULE) or \
                     \"cron\" (6-field cron) and an optional \"anchor\" (due or completion)"
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RecurrenceInput, E> {
                Ok(RecurrenceInput::Shorthand(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<RecurrenceInput, E> {
                Ok(RecurrenceInput::Shorthand(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RecurrenceInput, A::Error> {
                let mut rule: Option<String> = None;
                let mut cron: Option<String> = None;
                let mut anchor: Option<Anchor> = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "rule" => set_once(&mut rule, "rule", map.next_value()?)?,
                        "cron" => set_once(&mut cron, "cron", map.next_value()?)?,
                        "anchor" => set_once(&mut anchor, "anchor", map.next_value()?)?,
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                let anchor = anchor.unwrap_or_default();
                Ok(match pick_schedule(rule, cron)? {
                    Schedule::Rule(rule) => RecurrenceInput::Rule(RuleInput { rule, anchor }),
                    Schedule::Cron(cron) => RecurrenceInput::Cron(CronInput { cron, anchor }),
                })
            }
        }

        deserializer.deserialize_any(InputVisitor)
    }
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(name));
    }
    Ok(())
}

fn pick_schedule<E: de::Error>(rule: Option<String>, cron: Option<String>) -> Result<Schedule, E> {
    match (rule, cron) {
        (Some(rule), None) => Ok(Schedule::Rule(rule)),
        (None, Some(cron)) => Ok(Schedule::Cron(cron)),
        (Some(_), Some(_)) => Err(E::custom(
            "a recurrence has either \"rule\" or \"cron\", not both",
        )),
        (None, None) => Err(E::custom(
            "a recurrence object needs \"rule\" (an RFC 5545 RRULE) or \"cron\" \
             (a 6-field cron expression)",
        )),
    }
}

/// How a task repeats, with a human summary of the schedule.
// The response shape of `Recurrence`, for the OpenAPI document only: the real type has
// hand-written serde impls that the derive cannot see.
#[allow(dead_code)] // never constructed; exists for its derived schema
#[derive(ToSchema)]
#[serde(untagged)]
enum RecurrenceDoc {
    Rule {
        /// Canonical RFC 5545 RRULE.
        #[schema(example = "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE")]
        rule: String,
        anchor: Anchor,
        /// False once the series was cancelled.
        active: bool,
        /// Human description of the schedule.
        #[schema(example = "every 2 weeks on Monday and Wednesday")]
        summary: String,
        /// Local due time of the occurrence the schedule is expanded from.
        #[schema(example = "2026-01-05T09:00:00")]
        dtstart: Option<String>,
        /// IANA zone of `dtstart`.
        #[schema(example = "Europe/Berlin")]
        tzid: Option<String>,
    },
    Cron {
        /// Six cron fields, evaluated in the task's time zone.
        #[schema(example = "0 0 9 * * Mon-Fri")]
        cron: String,
        anchor: Anchor,
        /// False once the series was cancelled.
        active: bool,
        /// Human description of the schedule.
        #[schema(example = "on the cron schedule '0 0 9 * * Mon-Fri'")]
        summary: String,
        /// Local due time of the occurrence the schedule is expanded from.
        #[schema(example = "2026-01-05T09:00:00")]
        dtstart: Option<String>,
        /// IANA zone of `dtstart`.
        #[schema(example = "Europe/Berlin")]
        tzid: Option<String>,
    },
}

impl PartialSchema for RecurrenceView {
    fn schema() -> RefOr<Schema> {
        RecurrenceDoc::schema()
    }
}

impl ToSchema for RecurrenceView {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Recurrence")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        RecurrenceDoc::schemas(schemas);
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing inputs
// ---------------------------------------------------------------------------------------------

fn shorthand(name: &str, due: Option<DateTime<Tz>>) -> Result<String, RecurrenceError> {
    let rule = match name.trim().to_ascii_lowercase().as_str() {
        "daily" => RuleSpec::new(Freq::Daily),
        "weekdays" => RuleSpec {
            by_day: WORKWEEK.iter().map(|&wd| DaySpec::every(wd)).collect(),
            ..RuleSpec::new(Freq::Weekly)
        },
        "weekly" => RuleSpec::new(Freq::Weekly),
        "yearly" => RuleSpec::new(Freq::Yearly),
        "monthly" => {
            // The day comes from the due date; without one the anchor check fails anyway.
            let due = due.ok_or(RecurrenceError::DueRequired)?;
            let mut spec = RuleSpec::new(Freq::Monthly);
            spec.set_clamped_month_day(due.day());
            spec
        }
        _ => return Err(RecurrenceError::UnknownShorthand(snippet(name.trim()))),
    };
    Ok(rule.to_string())
}

fn validate_rule(text: &str, due: Option<DateTime<Tz>>) -> Result<String, RecurrenceError> {
    let spec = RuleSpec::parse(text)?;
    spec.check_satisfiable()?;
    let due = due.filter(|d| (MIN_YEAR..=MAX_YEAR).contains(&d.year()));
    if let (Some(until), Some(due)) = (spec.until, due) {
        if !until.allows(due.naive_local(), due.with_timezone(&Utc)) {
            return Err(RecurrenceError::InvalidRule(format!(
                "UNTIL ({}) is before the due date",
                until.describe()
            )));
        }
    }
    // Let the rrule crate check what it knows better (ordinal ranges per FREQ, ...) and make
    // sure the rule yields at least one instance, e.g. not "the 10th Monday of the month".
    let start = due.map_or_else(reference_start, |d| whole_seconds(d.naive_local()));
    let set = spec.instance_set(start, start).map_err(rrule_error)?;
    if set.into_iter().next().is_none() {
        return Err(RecurrenceError::InvalidRule(
            "the rule never produces an occurrence".into(),
        ));
    }
    Ok(spec.to_string())
}

fn validate_cron(text: &str, due: Option<DateTime<Tz>>) -> Result<String, RecurrenceError> {
    let (normalised, schedule) = parse_cron(text)?;
    // One second and one minute value means instances are whole local hours apart, which is
    // also at least an hour of real time across DST changes. Checking this structurally is
    // stronger than comparing the first two upcoming instances (which may be far apart while
    // later ones are not).
    if schedule.seconds().count() != 1 || schedule.minutes().count() != 1 {
        return Err(RecurrenceError::CronTooFrequent(normalised));
    }
    let fires = match due.filter(|d| (MIN_YEAR..=MAX_YEAR).contains(&d.year())) {
        Some(due) => schedule.after(&due).next().is_some(),
        None => schedule
            .after(&reference_start().and_utc())
            .next()
            .is_some(),
    };
    if !fires {
        return Err(RecurrenceError::InvalidCron(
            "the schedule never fires".into(),
        ));
    }
    Ok(normalised)
}

fn parse_cron(text: &str) -> Result<(String, cron::Schedule), RecurrenceError> {
    let text = text.trim();
    if text.chars().count() > MAX_TEXT_LEN {
        return Err(RecurrenceError::InvalidCron(format!(
            "the expression is longer than {MAX_TEXT_LEN} characters"
        )));
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(RecurrenceError::CronFieldCount(fields.len()));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || c.is_whitespace() || "*?/,-".contains(*c)))
    {
        return Err(RecurrenceError::InvalidCron(format!(
            "unexpected character '{c}'"
        )));
    }
    // The cron crate numbers weekdays 1 = Sunday, unlike Unix cron (1 = Monday), so "1-5"
    // would silently mean Sunday to Thursday. Names are unambiguous.
    if fields[5].contains(|c: char| c.is_ascii_digit()) {
        return Err(RecurrenceError::InvalidCron(
            "use day names in the day-of-week field (e.g. Mon-Fri); numbers differ between \
             cron dialects"
                .into(),
        ));
    }
    let normalised = fields.join(" ");
    let schedule = cron::Schedule::from_str(&normalised)
        .map_err(|e| cron_parse_error(&normalised, &e.to_string()))?;
    // Fields written without spaces between them could be read as a 7th (year) field.
    if !schedule.years().is_all() {
        return Err(RecurrenceError::CronFieldCount(7));
    }
    Ok((normalised, schedule))
}

/// The cron crate's message is the expression, a line with a caret under the bad spot and
/// a description. Name the field the caret points at instead of echoing the whole thing.
fn cron_parse_error(normalised: &str, message: &str) -> RecurrenceError {
    const NAMES: [&str; 6] = [
        "seconds",
        "minutes",
        "hours",
        "day-of-month",
        "month",
        "day-of-week",
    ];
    let mut lines = message.lines().skip(1);
    let caret = lines.next().and_then(|line| line.find('^'));
    let detail: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut offset = 0;
    let mut field = None;
    for (name, value) in NAMES.iter().zip(normalised.split(' ')) {
        let end = offset + value.len();
        if caret.is_some_and(|col| (offset..=end).contains(&col)) {
            field = Some((name, value));
            break;
        }
        offset = end + 1;
    }
    let mut text = match field {
        Some((name, value)) => format!("the {name} field '{value}' is not valid"),
        None => format!("cannot parse '{normalised}'"),
    };
    if !detail.is_empty() {
        text.push_str(": ");
        text.push_str(&detail.join(" "));
    }
    RecurrenceError::InvalidCron(text)
}

fn rrule_error(e: RRuleError) -> RecurrenceError {
    let detail = match e {
        RRuleError::ParserError(e) => e.to_string(),
        RRuleError::ValidationError(e) => e.to_string(),
        RRuleError::IterError(e) => e,
    };
    RecurrenceError::InvalidRule(detail)
}

/// Start used to validate rules of tasks without a due date: a Monday 09:00.
fn reference_start() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(9, 0, 0))
        .unwrap_or_default()
}

/// Instances are generated at whole seconds; a fractional start would drop the first one.
fn whole_seconds(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Keep echoed user input short in error messages.
fn snippet(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut short: String = s.chars().take(MAX).collect();
        short.push('…');
        short
    }
}

// ---------------------------------------------------------------------------------------------
// RRULE model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freq {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Freq {
    fn as_str(self) -> &'static str {
        match self {
            Freq::Hourly => "HOURLY",
            Freq::Daily => "DAILY",
            Freq::Weekly => "WEEKLY",
            Freq::Monthly => "MONTHLY",
            Freq::Yearly => "YEARLY",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Freq::Hourly => "hour",
            Freq::Daily => "day",
            Freq::Weekly => "week",
            Freq::Monthly => "month",
            Freq::Yearly => "year",
        }
    }
}

/// One BYDAY item: `MO` (every Monday) or `-1FR` (last Friday of the month/year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DaySpec {
    nth: Option<i16>,
    weekday: Weekday,
}

impl DaySpec {
    fn every(weekday: Weekday) -> Self {
        DaySpec { nth: None, weekday }
    }

    fn sort_key(self) -> (u32, u8, i16) {
        let (group, n) = match self.nth {
            None => (0, 0),
            Some(n) if n > 0 => (1, n),
            Some(n) => (2, n.saturating_neg()),
        };
        (self.weekday.num_days_from_monday(), group, n)
    }
}

impl fmt::Display for DaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.nth {
            write!(f, "{n}")?;
        }
        f.write_str(weekday_code(self.weekday))
    }
}

/// The end of a series. RFC 5545 wants UTC when the start has a zone; we also accept a date
/// (inclusive, in the task's zone) and a local date-time, read in the task's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    Date(NaiveDate),
    Local(NaiveDateTime),
    Utc(DateTime<Utc>),
}

impl Until {
    fn parse(value: &str) -> Option<Until> {
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = value.get(range)?;
            if part.bytes().all(|b| b.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        let date = NaiveDate::from_ymd_opt(
            i32::try_from(digits(0..4)?).ok()?,
            digits(4..6)?,
            digits(6..8)?,
        )?;
        match value.len() {
            8 => Some(Until::Date(date)),
            15 | 16 if value.as_bytes().get(8) == Some(&b'T') => {
                let time =
                    NaiveTime::from_hms_opt(digits(9..11)?, digits(11..13)?, digits(13..15)?)?;
                let at = date.and_time(time);
                match value.get(15..) {
                    Some("") => Some(Until::Local(at)),
                    Some("Z") => Some(Until::Utc(at.and_utc())),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Whether an instance (local wall time and real instant) is within the series.
    fn allows(&self, local: NaiveDateTime, instant: DateTime<Utc>) -> bool {
        match *self {
            Until::Date(date) => local.date() <= date,
            Until::Local(at) => local <= at,
            Until::Utc(at) => instant <= at,
        }
    }

    fn describe(&self) -> String {
        let time = |t: NaiveDateTime| {
            if t.second() == 0 {
                t.format("%Y-%m-%d %H:%M").to_string()
            } else {
                t.format("%Y-%m-%d %H:%M:%S").to_string()
            }
        };
        match *self {
            Until::Date(date) => date.format("%Y-%m-%d").to_string(),
            Until::Local(at) => time(at),
            Until::Utc(at) => format!("{} UTC", time(at.naive_utc())),
        }
    }
}

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Until::Date(date) => write!(f, "{}", date.format("%Y%m%d")),
            Until::Local(at) => write!(f, "{}", at.format("%Y%m%dT%H%M%S")),
            Until::Utc(at) => write!(f, "{}", at.format("%Y%m%dT%H%M%SZ")),
        }
    }
}

/// A parsed, validated RRULE restricted to the parts we support. Its `Display` is the
/// canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleSpec {
    freq: Freq,
    interval: u16,
    by_month: Vec<u8>,
    by_month_day: Vec<i8>,
    by_day: Vec<DaySpec>,
    by_set_pos: Vec<i16>,
    count: Option<u32>,
    until: Option<Until>,
    wkst: Weekday,
}

fn invalid(msg: impl Into<String>) -> RecurrenceError {
    RecurrenceError::InvalidRule(msg.into())
}

impl RuleSpec {
    fn new(freq: Freq) -> Self {
        RuleSpec {
            freq,
            interval: 1,
            by_month: Vec::new(),
            by_month_day: Vec::new(),
            by_day: Vec::new(),
            by_set_pos: Vec::new(),
            count: None,
            until: None,
            wkst: Weekday::Mon,
        }
    }

    /// Day `day` of every month, or the month's last day when it is shorter: calendars clamp
    /// rather than skip months. Needs FREQ=MONTHLY, or YEARLY with at most one BYMONTH, and no
    /// BYSETPOS (the idiom uses it).
    fn set_clamped_month_day(&mut self, day: u32) {
        let day = i8::try_from(day.clamp(1, 31)).unwrap_or(1);
        (self.by_month_day, self.by_set_pos) = match day {
            31 => (vec![-1], vec![]),
            29 | 30 => ((28..=day).collect(), vec![-1]),
            _ => (vec![day], vec![]),
        };
    }

    /// Parse RRULE text (optionally prefixed by `RRULE:`), case-insensitively.
    fn parse(text: &str) -> Result<RuleSpec, RecurrenceError> {
        let text = text.trim();
        if text.chars().count() > MAX_TEXT_LEN {
            return Err(invalid(format!(
                "the rule is longer than {MAX_TEXT_LEN} characters"
            )));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() && !c.is_ascii_whitespace())
        {
            return Err(invalid(format!("unexpected character {c:?}")));
        }
        let upper = text.to_ascii_uppercase();

        let mut rule_line = None;
        for line in upper.lines().map(str::trim).filter(|l| !l.is_empty()) {
            reject_other_property(line.split([':', ';', '=']).next().unwrap_or_default())?;
            if rule_line.replace(line).is_some() {
                return Err(invalid("only one RRULE line is allowed"));
            }
        }
        let line = rule_line.unwrap_or_default();
        let body = line.strip_prefix("RRULE:").unwrap_or(line);

        let mut seen: Vec<&str> = Vec::new();
        let mut freq = None;
        let mut interval = None;
        let mut by_month = None;
        let mut by_month_day = None;
        let mut by_day = None;
        let mut by_set_pos = None;
        let mut count = None;
        let mut until = None;
        let mut wkst = None;
        for part in body.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(invalid(format!(
                    "expected KEY=VALUE, got '{}'",
                    snippet(part)
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(invalid(format!("{key} appears more than once")));
            }
            seen.push(key);
            let slot = match key {
                "FREQ" => &mut freq,
                "INTERVAL" => &mut interval,
                "BYMONTH" => &mut by_month,
                "BYMONTHDAY" => &mut by_month_day,
                "BYDAY" => &mut by_day,
                "BYSETPOS" => &mut by_set_pos,
                "COUNT" => &mut count,
                "UNTIL" => &mut until,
                "WKST" => &mut wkst,
                "BYHOUR" | "BYMINUTE" | "BYSECOND" | "BYYEARDAY" | "BYWEEKNO" => {
                    return Err(invalid(format!(
                        "{key} is not supported; supported parts are FREQ, INTERVAL, BYMONTH, \
                         BYMONTHDAY, BYDAY, BYSETPOS, COUNT, UNTIL and WKST"
                    )))
                }
                other => {
                    reject_other_property(other)?;
                    return Err(invalid(format!("unknown rule part '{}'", snippet(other))));
                }
            };
            *slot = Some(value);
        }

        let freq = match freq {
            None => return Err(invalid("FREQ is required")),
            Some("HOURLY") => Freq::Hourly,
            Some("DAILY") => Freq::Daily,
            Some("WEEKLY") => Freq::Weekly,
            Some("MONTHLY") => Freq::Monthly,
            Some("YEARLY") => Freq::Yearly,
            Some(f @ ("MINUTELY" | "SECONDLY")) => {
                return Err(RecurrenceError::TooFrequent(f.to_owned()))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "unknown FREQ '{}'; expected HOURLY, DAILY, WEEKLY, MONTHLY or YEARLY",
                    snippet(other)
                )))
            }
        };
        let mut spec = RuleSpec::new(freq);

        if let Some(v) = interval {
            spec.interval = v
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=MAX_INTERVAL).contains(n))
                .ok_or_else(|| {
                    invalid(format!(
                        "INTERVAL must be a whole number from 1 to {MAX_INTERVAL}, got '{}'",
                        snippet(v)
                    ))
                })?;
        }
        if let Some(v) = count {
            spec.count = Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "COUNT must be a whole number from 1 to {MAX_COUNT}, got '{}'",
                            snippet(v)
                        ))
                    })?,
            );
        }
        if let Some(v) = until {
            spec.until = Some(Until::parse(v).ok_or_else(|| {
                invalid(format!(
                    "UNTIL must be a date (YYYYMMDD) or a date-time (YYYYMMDDTHHMMSSZ), got '{}'",
                    snippet(v)
                ))
            })?);
        }
        if spec.count.is_some() && spec.until.is_some() {
            return Err(invalid("COUNT and UNTIL cannot be used together"));
        }
        if let Some(v) = wkst {
            spec.wkst = parse_weekday(v)
                .ok_or_else(|| invalid(format!("unknown weekday '{}' in WKST", snippet(v))))?;
        }
        if let Some(v) = by_month {
            spec.by_month = parse_numbers(v, "BYMONTH", 1, 12, false)?;
        }
        if let Some(v) = by_month_day {
            if freq == Freq::Weekly {
                return Err(invalid("BYMONTHDAY cannot be used with FREQ=WEEKLY"));
            }
            spec.by_month_day = parse_numbers(v, "BYMONTHDAY", -31, 31, true)?;
        }
        if let Some(v) = by_day {
            spec.by_day = parse_by_day(v, freq)?;
        }
        if let Some(v) = by_set_pos {
            if by_day.is_none() && by_month_day.is_none() && by_month.is_none() {
                return Err(invalid(
                    "BYSETPOS needs BYDAY, BYMONTHDAY or BYMONTH to pick from",
                ));
            }
            spec.by_set_pos = parse_numbers(v, "BYSETPOS", -366, 366, true)?;
        }
        Ok(spec)
    }

    /// Reject BYMONTH/BYMONTHDAY combinations that never happen (e.g. February 30) before
    /// iterating, which would otherwise walk many periods looking for an instance.
    fn check_satisfiable(&self) -> Result<(), RecurrenceError> {
        if !self.by_set_pos.is_empty() {
            let most = self.max_candidates_per_period();
            if self.by_set_pos.iter().all(|p| p.unsigned_abs() > most) {
                let noun = if most == 1 { "instance" } else { "instances" };
                return Err(invalid(format!(
                    "BYSETPOS asks for more than the {most} {noun} there can be in each {}, so \
                     the rule never produces an occurrence",
                    self.freq.unit()
                )));
            }
        }
        if self.by_month_day.is_empty() {
            return Ok(());
        }
        let months: Vec<u8> = if self.by_month.is_empty() {
            (1..=12).collect()
        } else {
            self.by_month.clone()
        };
        let possible = months.iter().any(|&m| {
            self.by_month_day
                .iter()
                .any(|&d| u32::from(d.unsigned_abs()) <= max_days_in_month(m))
        });
        if possible {
            Ok(())
        } else {
            Err(invalid(
                "no month in BYMONTH has the days in BYMONTHDAY, so the rule never produces an \
                 occurrence",
            ))
        }
    }

    /// An upper bound on the instances in one period (one time of day per day, since
    /// BYHOUR and friends are not supported), for the BYSETPOS check.
    fn max_candidates_per_period(&self) -> u16 {
        let months = if self.by_month.is_empty() {
            12
        } else {
            self.by_month.len()
        };
        let (days_per_period, months_per_period) = match self.freq {
            Freq::Hourly | Freq::Daily => return 1,
            Freq::Weekly => {
                return if self.by_day.is_empty() {
                    1
                } else {
                    len_u16(self.by_day.len())
                }
            }
            Freq::Monthly => (31, 1),
            Freq::Yearly => ((31 * months).min(366), months),
        };
        let mut most = days_per_period;
        if !self.by_month_day.is_empty() {
            most = most.min(self.by_month_day.len() * months_per_period);
        }
        if !self.by_day.is_empty() {
            // An ordinal picks one day per month (YEARLY with BYMONTH) or per year; a plain
            // weekday occurs at most 5 times a month.
            let per_ordinal = if self.freq == Freq::Yearly && self.by_month.is_empty() {
                1
            } else {
                months_per_period
            };
            let by_day: usize = self
                .by_day
                .iter()
                .map(|d| {
                    if d.nth.is_some() {
                        per_ordinal
                    } else {
                        5 * months_per_period
                    }
                })
                .sum();
            most = most.min(by_day);
        }
        len_u16(most)
    }

    /// The pattern the rrule crate expands: COUNT and UNTIL are applied by us (by
    /// occurrence number and on real instants), and the parts RFC 5545 takes from DTSTART
    /// are spelled out from `start` so that the iteration start can move (fast-forward,
    /// restart at completion) without changing the pattern. Days 29-31 are clamped.
    fn pattern(&self, start: NaiveDateTime) -> RuleSpec {
        let mut p = self.clone();
        p.count = None;
        p.until = None;
        let no_day_parts = p.by_month_day.is_empty() && p.by_day.is_empty();
        match p.freq {
            Freq::Weekly if p.by_day.is_empty() => p.by_day = vec![DaySpec::every(start.weekday())],
            Freq::Monthly if no_day_parts => {
                if p.by_set_pos.is_empty() {
                    p.set_clamped_month_day(start.day());
                } else {
                    p.by_month_day = vec![i8::try_from(start.day()).unwrap_or(1)];
                }
            }
            Freq::Yearly if no_day_parts => {
                if p.by_month.is_empty() {
                    p.by_month = vec![u8::try_from(start.month()).unwrap_or(1)];
                }
                if p.by_month.len() == 1 && p.by_set_pos.is_empty() {
                    p.set_clamped_month_day(start.day());
                } else {
                    p.by_month_day = vec![i8::try_from(start.day()).unwrap_or(1)];
                }
            }
            _ => {}
        }
        p
    }

    /// Instances of `pattern(pattern_start)` from `iter_start` on, in floating local time.
    fn instance_set(
        &self,
        pattern_start: NaiveDateTime,
        iter_start: NaiveDateTime,
    ) -> Result<RRuleSet, RRuleError> {
        let dt_start = rrule::Tz::UTC.from_utc_datetime(&whole_seconds(iter_start));
        let rule: RRule<Unvalidated> = self.pattern(pattern_start).to_string().parse()?;
        let rule = rule.validate(dt_start)?;
        // `limit` makes the iterator give up after a bounded number of empty periods.
        Ok(RRuleSet::new(dt_start).rrule(rule).limit())
    }

    /// First instance whose local time and instant satisfy `accept`, within UNTIL.
    fn first_instance(
        &self,
        pattern_start: NaiveDateTime,
        iter_start: NaiveDateTime,
        tz: Tz,
        accept: impl Fn(NaiveDateTime, DateTime<Utc>) -> bool,
    ) -> Option<DateTime<Utc>> {
        let set = self.instance_set(pattern_start, iter_start).ok()?;
        for instance in set.into_iter().take(MAX_SCAN) {
            let local = instance.naive_utc();
            let Some(at) = resolve_local(tz, local) else {
                continue;
            };
            if self.until.is_some_and(|u| !u.allows(local, at)) {
                // Instances only grow, so the series is over.
                return None;
            }
            if accept(local, at) {
                return Some(at);
            }
        }
        None
    }

    fn next_after_due(
        &self,
        series_start: DateTime<Utc>,
        current_due: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        let start = whole_seconds(series_start.with_timezone(&tz).naive_local());
        let target = current_due.with_timezone(&tz).naive_local();
        let iter_start = self.fast_forward(start, target);
        self.first_instance(start, iter_start, tz, |_, at| at > current_due)
    }

    fn next_after_completion(
        &self,
        series_start: DateTime<Utc>,
        completed_at: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        let done = completed_at.with_timezone(&tz).naive_local();
        let start = if self.freq == Freq::Hourly {
            done.with_second(0)
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(done)
        } else {
            let time_of_day = series_start.with_timezone(&tz).naive_local().time();
            done.date().and_time(time_of_day)
        };
        let start = whole_seconds(start);
        self.first_instance(start, start, tz, |local, at| {
            local > start && at > completed_at
        })
    }

    /// Move the iteration start to a whole number of periods before `target`, so that a long
    /// series does not replay every past instance. Patterns are fully spelled out by
    /// [`RuleSpec::pattern`], so only alignment matters: whole periods of INTERVAL keep it.
    fn fast_forward(&self, start: NaiveDateTime, target: NaiveDateTime) -> NaiveDateTime {
        if target <= start {
            return start;
        }
        let n = i64::from(self.interval);
        // Stay one period short of the target as a margin.
        let periods = |elapsed: i64| (elapsed / n - 1).max(0) * n;
        let moved = match self.freq {
            Freq::Hourly => TimeDelta::try_hours(periods((target - start).num_hours()))
                .and_then(|d| start.checked_add_signed(d)),
            Freq::Daily => TimeDelta::try_days(periods((target.date() - start.date()).num_days()))
                .and_then(|d| start.checked_add_signed(d)),
            Freq::Weekly => {
                TimeDelta::try_weeks(periods((target.date() - start.date()).num_days() / 7))
                    .and_then(|d| start.checked_add_signed(d))
            }
            Freq::Monthly => {
                let index = |t: NaiveDateTime| i64::from(t.year()) * 12 + i64::from(t.month0());
                let month = index(start) + periods(index(target) - index(start));
                let year = i32::try_from(month.div_euclid(12)).ok();
                let month0 = u32::try_from(month.rem_euclid(12)).ok();
                year.zip(month0)
                    .and_then(|(y, m0)| NaiveDate::from_ymd_opt(y, m0 + 1, 1))
                    .map(|d| d.and_time(start.time()))
            }
            Freq::Yearly => {
                let years = periods(i64::from(target.year()) - i64::from(start.year()));
                i32::try_from(i64::from(start.year()) + years)
                    .ok()
                    .and_then(|y| NaiveDate::from_ymd_opt(y, 1, 1))
                    .map(|d| d.and_time(start.time()))
            }
        };
        moved.filter(|m| *m >= start).unwrap_or(start)
    }

    /// Day `d` from the clamp idiom (`BYMONTHDAY=28,...,d;BYSETPOS=-1`), if this is it.
    fn clamped_day(&self) -> Option<u32> {
        let days = &self.by_month_day;
        let is_idiom = self.by_set_pos == [-1]
            && self.by_day.is_empty()
            && days.len() >= 2
            && days.iter().zip(28..).all(|(&d, expected)| d == expected);
        is_idiom
            .then(|| days.last().map(|&d| u32::from(d.unsigned_abs())))
            .flatten()
    }

    fn describe(&self) -> String {
        let every_weekday_of_week =
            !self.by_day.is_empty() && self.by_day.iter().all(|d| d.nth.is_none());
        let workweek = every_weekday_of_week && is_workweek(&self.by_day);
        let only_by_day =
            self.by_month.is_empty() && self.by_month_day.is_empty() && self.by_set_pos.is_empty();
        let mut months_said = false;

        let mut text = if workweek
            && only_by_day
            && self.interval == 1
            && matches!(self.freq, Freq::Daily | Freq::Weekly)
        {
            "every weekday".to_owned()
        } else if self.freq == Freq::Daily
            && self.interval == 1
            && every_weekday_of_week
            && self.by_month_day.is_empty()
            && self.by_set_pos.is_empty()
        {
            format!("every {}", self.weekdays_phrase("weekday"))
        } else {
            let unit = self.freq.unit();
            let mut text = if self.interval == 1 {
                format!("every {unit}")
            } else {
                format!("every {} {unit}s", self.interval)
            };
            if let Some(days) = self.days_phrase(&mut months_said) {
                text.push(' ');
                text.push_str(&days);
            }
            text
        };
        if !months_said && !self.by_month.is_empty() {
            let months: Vec<String> = self
                .by_month
                .iter()
                .map(|&m| month_name(m).to_owned())
                .collect();
            text.push_str(" in ");
            text.push_str(&join(&months, "and"));
        }
        if let Some(extra) = self.set_pos_clause() {
            text.push_str(&extra);
        }
        match (self.count, self.until) {
            (Some(1), _) => text.push_str(", once"),
            (Some(n), _) => text.push_str(&format!(", {n} times")),
            (None, Some(until)) => text.push_str(&format!(" until {}", until.describe())),
            (None, None) => {}
        }
        text
    }

    /// "on day 15", "on the first Monday", "on March 3", ...; None when no day parts are set.
    fn days_phrase(&self, months_said: &mut bool) -> Option<String> {
        let single_month = match self.by_month.as_slice() {
            [m] if self.freq == Freq::Yearly => Some(*m),
            _ => None,
        };
        if let Some(day) = self.clamped_day() {
            if let Some(m) = single_month {
                *months_said = true;
                let name = month_name(m);
                return Some(if m == 2 && day == 29 {
                    "on February 29 (February 28 in common years)".to_owned()
                } else if day >= max_days_in_month(m) {
                    format!("on the last day of {name}")
                } else {
                    format!("on {name} {day}")
                });
            }
            return Some(if day >= 31 {
                "on the last day".to_owned()
            } else {
                format!("on day {day} (or the last day of shorter months)")
            });
        }
        if let (Some(m), [d], true, true) = (
            single_month,
            self.by_month_day.as_slice(),
            self.by_day.is_empty(),
            self.by_set_pos.is_empty(),
        ) {
            *months_said = true;
            let name = month_name(m);
            return Some(match *d {
                d if d > 0 => format!("on {name} {d}"),
                -1 => format!("on the last day of {name}"),
                d => format!("on the {} day of {name}", ordinal_word(i32::from(d))),
            });
        }
        if self.set_pos_picks_weekday() {
            let pos = self.by_set_pos.first().copied().unwrap_or(1);
            let all: Vec<Weekday> = self.by_day.iter().map(|d| d.weekday).collect();
            let kind = if all.len() == 7 {
                "day".to_owned()
            } else if is_workweek(&self.by_day) {
                "weekday".to_owned()
            } else if all == [Weekday::Sat, Weekday::Sun] {
                "weekend day".to_owned()
            } else {
                let names: Vec<String> = all.iter().map(|&w| weekday_name(w).to_owned()).collect();
                join(&names, "or")
            };
            return Some(format!("on the {} {kind}", ordinal_word(i32::from(pos))));
        }
        match (self.by_month_day.is_empty(), self.by_day.is_empty()) {
            (true, true) => None,
            (false, true) => Some(format!("on {}", self.month_days_phrase())),
            (true, false) => Some(format!("on {}", self.weekdays_phrase("weekdays"))),
            (false, false) => {
                let names: Vec<String> = self.by_day.iter().map(|&d| day_spec_phrase(d)).collect();
                Some(format!(
                    "on {} if it is a {}",
                    self.month_days_phrase(),
                    join(&names, "or")
                ))
            }
        }
    }

    /// A single BYSETPOS over plain weekdays reads as "the last weekday".
    fn set_pos_picks_weekday(&self) -> bool {
        self.by_set_pos.len() == 1
            && self.by_month_day.is_empty()
            && !self.by_day.is_empty()
            && self.by_day.iter().all(|d| d.nth.is_none())
    }

    /// Generic BYSETPOS wording for the cases `days_phrase` has not already folded in.
    fn set_pos_clause(&self) -> Option<String> {
        if self.by_set_pos.is_empty()
            || self.clamped_day().is_some()
            || self.set_pos_picks_weekday()
        {
            return None;
        }
        let picks: Vec<String> = self
            .by_set_pos
            .iter()
            .map(|&p| ordinal_word(i32::from(p)))
            .collect();
        let noun = if picks.len() == 1 {
            "occurrence"
        } else {
            "occurrences"
        };
        Some(format!(
            ", only the {} {noun} in each {}",
            join(&picks, "and"),
            self.freq.unit()
        ))
    }

    /// "Monday and Friday", "the first Monday"; Monday to Friday is `workweek`.
    fn weekdays_phrase(&self, workweek: &str) -> String {
        if is_workweek(&self.by_day) {
            return workweek.to_owned();
        }
        let names: Vec<String> = self.by_day.iter().map(|&d| day_spec_phrase(d)).collect();
        join(&names, "and")
    }

    fn month_days_phrase(&self) -> String {
        let positive: Vec<String> = self
            .by_month_day
            .iter()
            .filter(|&&d| d > 0)
            .map(ToString::to_string)
            .collect();
        let mut items = positive.clone();
        items.extend(
            self.by_month_day
                .iter()
                .filter(|&&d| d < 0)
                .map(|&d| format!("the {} day", ordinal_word(i32::from(d)))),
        );
        let list = join(&items, "and");
        match positive.len() {
            0 => list,
            1 => format!("day {list}"),
            _ => format!("days {list}"),
        }
    }
}

impl fmt::Display for RuleSpec {
    /// Canonical order: FREQ;INTERVAL;BYMONTH;BYMONTHDAY;BYDAY;BYSETPOS;COUNT;UNTIL;WKST,
    /// leaving out defaults (INTERVAL=1, WKST=MO).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(items: &[T]) -> String {
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
        write!(f, "FREQ={}", self.freq.as_str())?;
        if self.interval != 1 {
            write!(f, ";INTERVAL={}", self.interval)?;
        }
        if !self.by_month.is_empty() {
            write!(f, ";BYMONTH={}", list(&self.by_month))?;
        }
        if !self.by_month_day.is_empty() {
            write!(f, ";BYMONTHDAY={}", list(&self.by_month_day))?;
        }
        if !self.by_day.is_empty() {
            write!(f, ";BYDAY={}", list(&self.by_day))?;
        }
        if !self.by_set_pos.is_empty() {
            write!(f, ";BYSETPOS={}", list(&self.by_set_pos))?;
        }
        if let Some(count) = self.count {
            write!(f, ";COUNT={count}")?;
        }
        if let Some(until) = self.until {
            write!(f, ";UNTIL={until}")?;
        }
        if self.wkst != Weekday::Mon {
            write!(f, ";WKST={}", weekday_code(self.wkst))?;
        }
        Ok(())
    }
}

/// DTSTART and friends describe the series around the rule; we take those from the task.
fn reject_other_property(name: &str) -> Result<(), RecurrenceError> {
    match name.trim() {
        "DTSTART" => Err(invalid(
            "DTSTART is not allowed; the task's due date is the start of the series",
        )),
        p @ ("EXDATE" | "RDATE" | "EXRULE") => Err(invalid(format!(
            "{p} is not supported; send a single RRULE"
        ))),
        _ => Ok(()),
    }
}

/// Comma-separated integers in `min..=max` (0 excluded when `nonzero`), sorted canonically
/// (ascending, then negatives from -1 down) and deduplicated.
fn parse_numbers<T>(
    value: &str,
    key: &str,
    min: i32,
    max: i32,
    nonzero: bool,
) -> Result<Vec<T>, RecurrenceError>
where
    T: TryFrom<i32> + Into<i32> + Copy + Ord,
{
    let problem = || {
        let zero = if nonzero { ", not 0" } else { "" };
        invalid(format!(
            "{key} must be a comma-separated list of whole numbers from {min} to {max}{zero}, \
             got '{}'",
            snippet(value)
        ))
    };
    let mut numbers = Vec::new();
    for item in value.split(',') {
        let n: i32 = item.trim().parse().map_err(|_| problem())?;
        if n < min || n > max || (nonzero && n == 0) {
            return Err(problem());
        }
        numbers.push(T::try_from(n).map_err(|_| problem())?);
    }
    numbers.sort_by_key(|&n| {
        let n: i32 = n.into();
        if n > 0 {
            (0, n)
        } else {
            (1, -n)
        }
    });
    numbers.dedup();
    Ok(numbers)
}

fn parse_by_day(value: &str, freq: Freq) -> Result<Vec<DaySpec>, RecurrenceError> {
    let mut days = Vec::new();
    for item in value.split(',').map(str::trim) {
        let split = item
            .find(|c: char| !(c.is_ascii_digit() || c == '+' || c == '-'))
            .unwrap_or(item.len());
        let (number, code) = item.split_at(split);
        let weekday = parse_weekday(code).ok_or_else(|| {
            let shown = if code.is_empty() { item } else { code };
            invalid(format!("unknown weekday '{}' in BYDAY", snippet(shown)))
        })?;
        let nth = if number.is_empty() {
            None
        } else {
            let limit: i16 = match freq {
                Freq::Monthly => 5,
                Freq::Yearly => 53,
                _ => {
                    return Err(invalid(format!(
                        "BYDAY ordinals like '{}' need FREQ=MONTHLY or FREQ=YEARLY",
                        snippet(item)
                    )))
                }
            };
            let n = number
                .parse::<i16>()
                .ok()
                .filter(|n| *n != 0 && n.unsigned_abs() <= limit.unsigned_abs())
                .ok_or_else(|| {
                    invalid(format!(
                        "BYDAY ordinal in '{}' must be from 1 to {limit} or -{limit} to -1 for \
                         FREQ={}",
                        snippet(item),
                        freq.as_str()
                    ))
                })?;
            Some(n)
        };
        days.push(DaySpec { nth, weekday });
    }
    days.sort_by_key(|d| d.sort_key());
    days.dedup();
    Ok(days)
}

// ---------------------------------------------------------------------------------------------
// Time helpers
// ---------------------------------------------------------------------------------------------

/// The real instant of a wall-clock time in `tz`. In an overlap (clocks going back) the
/// earlier instant is used; in a gap (clocks going forward) the offset from before the gap,
/// as RFC 5545 §3.3.5 says, which moves e.g. 02:30 to 03:30.
fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            let before = local.checked_sub_signed(TimeDelta::try_days(1)?)?;
            let offset = tz.offset_from_local_datetime(&before).earliest()?.fix();
            let utc = local
                .checked_sub_signed(TimeDelta::try_seconds(offset.local_minus_utc().into())?)?;
            Some(utc.and_utc())
        }
    }
}

fn len_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn max_days_in_month(month: u8) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// ---------------------------------------------------------------------------------------------
// Words
// ---------------------------------------------------------------------------------------------

fn weekday_code(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

fn parse_weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

fn month_name(month: u8) -> &'static str {
    usize::from(month)
        .checked_sub(1)
        .and_then(|i| MONTH_NAMES.get(i))
        .copied()
        .unwrap_or("?")
}

fn is_workweek(days: &[DaySpec]) -> bool {
    days.len() == WORKWEEK.len()
        && days
            .iter()
            .zip(WORKWEEK)
            .all(|(d, w)| d.weekday == w && d.nth.is_none())
}

fn day_spec_phrase(d: DaySpec) -> String {
    match d.nth {
        None => weekday_name(d.weekday).to_owned(),
        Some(n) => format!(
            "the {} {}",
            ordinal_word(i32::from(n)),
            weekday_name(d.weekday)
        ),
    }
}

/// "first", "second", ..., "21st", "last", "second-to-last".
fn ordinal_word(n: i32) -> String {
    match n {
        1 => "first".into(),
        2 => "second".into(),
        3 => "third".into(),
        4 => "fourth".into(),
        5 => "fifth".into(),
        -1 => "last".into(),
        n if n < 0 => format!("{}-to-last", ordinal_word(n.saturating_neg())),
        n => {
            let suffix = match (n % 10, n % 100) {
                (_, 11..=13) => "th",
                (1, _) => "st",
                (2, _) => "nd",
                (3, _) => "rd",
                _ => "th",
            };
            format!("{n}{suffix}")
        }
    }
}

/// "a", "a and b", "a, b and c".
fn join(items: &[String], conjunction: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {conjunction} {last}", init.join(", ")),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const NEW_YORK: Tz = chrono_tz::America::New_York;

    fn local(tz: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Tz> {
        tz.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("unambiguous test time")
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("valid test time")
    }

    fn short(name: &str) -> RecurrenceInput {
        RecurrenceInput::Shorthand(name.into())
    }

    fn rule(text: &str) -> RecurrenceInput {
        RecurrenceInput::Rule(RuleInput {
            rule: text.into(),
            anchor: Anchor::Due,
        })
    }

    fn rule_from_completion(text: &str) -> RecurrenceInput {
        RecurrenceInput::Rule(RuleInput {
            rule: text.into(),
            anchor: Anchor::Completion,
        })
    }

    fn cron(text: &str) -> RecurrenceInput {
        RecurrenceInput::Cron(CronInput {
            cron: text.into(),
            anchor: Anchor::Due,
        })
    }

    fn parse(input: RecurrenceInput, due: Option<DateTime<Tz>>) -> Recurrence {
        Recurrence::parse(&input, due).expect("valid recurrence")
    }

    fn rule_text(r: &Recurrence) -> &str {
        match &r.schedule {
            Schedule::Rule(text) => text,
            Schedule::Cron(text) => panic!("expected a rule, got cron {text}"),
        }
    }

    fn error(input: RecurrenceInput, due: Option<DateTime<Tz>>) -> String {
        Recurrence::parse(&input, due)
            .expect_err("should be rejected")
            .to_string()
    }

    /// Steps a Due-anchored series `n` times, completing each occurrence on time.
    fn series(r: &Recurrence, start: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = vec![start];
        let mut current = start;
        for occurrence in 1.. {
            if out.len() >= n {
                break;
            }
            match r.next_due(start, current, current, occurrence, tz) {
                Some(next) => {
                    assert!(next > current, "series must move forward");
                    out.push(next);
                    current = next;
                }
                None => break,
            }
        }
        out
    }

    fn monday_9() -> Option<DateTime<Tz>> {
        Some(local(Tz::UTC, 2025, 3, 3, 9, 0))
    }

    // --- shorthands -------------------------------------------------------------------------

    #[test]
    fn shorthands_normalise_to_rules() {
        let due = monday_9();
        let cases = [
            ("daily", "FREQ=DAILY", "every day"),
            (
                "weekdays",
                "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
                "every weekday",
            ),
            ("weekly", "FREQ=WEEKLY", "every week"),
            (
                "monthly",
                "FREQ=MONTHLY;BYMONTHDAY=3",
                "every month on day 3",
            ),
            ("yearly", "FREQ=YEARLY", "every year"),
            ("  Weekly ", "FREQ=WEEKLY", "every week"),
            ("DAILY", "FREQ=DAILY", "every day"),
        ];
        for (name, text, summary) in cases {
            let r = parse(short(name), due);
            assert_eq!(rule_text(&r), text, "{name}");
            assert_eq!(r.summary(), summary, "{name}");
            assert_eq!(r.anchor, Anchor::Due);
            assert!(r.active);
        }
    }

    #[test]
    fn unknown_shorthand_lists_the_options() {
        assert_eq!(
            error(short("fortnightly"), monday_9()),
            "unknown shorthand 'fortnightly'; expected one of daily, weekdays, weekly, monthly, yearly"
        );
    }

    #[test]
    fn monthly_shorthand_clamps_late_days() {
        let cases = [
            (15, "FREQ=MONTHLY;BYMONTHDAY=15", "every month on day 15"),
            (28, "FREQ=MONTHLY;BYMONTHDAY=28", "every month on day 28"),
            (
                29,
                "FREQ=MONTHLY;BYMONTHDAY=28,29;BYSETPOS=-1",
                "every month on day 29 (or the last day of shorter months)",
            ),
            (
                30,
                "FREQ=MONTHLY;BYMONTHDAY=28,29,30;BYSETPOS=-1",
                "every month on day 30 (or the last day of shorter months)",
            ),
            (
                31,
                "FREQ=MONTHLY;BYMONTHDAY=-1",
                "every month on the last day",
            ),
        ];
        for (day, text, summary) in cases {
            let r = parse(short("monthly"), Some(local(Tz::UTC, 2025, 1, day, 9, 0)));
            assert_eq!(rule_text(&r), text);
            assert_eq!(r.summary(), summary);
        }
    }

    #[test]
    fn monthly_from_jan_31_visits_the_last_day_of_each_month() {
        for (year, feb) in [(2025, 28), (2024, 29)] {
            let due = local(BERLIN, year, 1, 31, 9, 0);
            let r = parse(short("monthly"), Some(due));
            let dates: Vec<_> = series(&r, due.with_timezone(&Utc), BERLIN, 4)
                .into_iter()
                .map(|d| d.with_timezone(&BERLIN).date_naive())
                .collect();
            let expected: Vec<_> = [(1, 31), (2, feb), (3, 31), (4, 30)]
                .into_iter()
                .map(|(m, d)| NaiveDate::from_ymd_opt(year, m, d).expect("date"))
                .collect();
            assert_eq!(dates, expected);
        }
    }

    #[test]
    fn monthly_on_the_30th_clamps_in_february_and_returns() {
        let due = local(Tz::UTC, 2025, 1, 30, 9, 0);
        let r = parse(short("monthly"), Some(due));
        let days: Vec<u32> = series(&r, due.with_timezone(&Utc), Tz::UTC, 4)
            .iter()
            .map(|d| d.day())
            .collect();
        assert_eq!(days, [30, 28, 30, 30]);
    }

    #[test]
    fn shorthand_needs_a_due_date() {
        assert_eq!(
            error(short("daily"), None),
            "recurrence needs due_at when anchor is 'due'"
        );
        assert_eq!(
            error(short("monthly"), None),
            "recurrence needs due_at when anchor is 'due'"
        );
    }

    // --- rules ------------------------------------------------------------------------------

    #[test]
    fn rules_are_normalised() {
        let cases = [
            (
                "rrule:freq=weekly;byday=we,mo;interval=2",
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE",
            ),
            ("RRULE:FREQ=DAILY;INTERVAL=1", "FREQ=DAILY"),
            (" FREQ=MONTHLY ; BYDAY=+1MO ; ", "FREQ=MONTHLY;BYDAY=1MO"),
            (
                "FREQ=MONTHLY;BYMONTHDAY=-1,15,1,15",
                "FREQ=MONTHLY;BYMONTHDAY=1,15,-1",
            ),
            (
                "WKST=SU;COUNT=5;BYSETPOS=-1;BYDAY=FR,TH;BYMONTH=6,1;FREQ=YEARLY",
                "FREQ=YEARLY;BYMONTH=1,6;BYDAY=TH,FR;BYSETPOS=-1;COUNT=5;WKST=SU",
            ),
            ("FREQ=WEEKLY;WKST=MO", "FREQ=WEEKLY"),
            ("FREQ=WEEKLY;UNTIL=20270131", "FREQ=WEEKLY;UNTIL=20270131"),
            (
                "FREQ=DAILY;UNTIL=20270131T120000z",
                "FREQ=DAILY;UNTIL=20270131T120000Z",
            ),
            ("FREQ=HOURLY;INTERVAL=6", "FREQ=HOURLY;INTERVAL=6"),
            (
                "FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=3",
                "FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=3",
            ),
        ];
        for (input, canonical) in cases {
            let r = parse(rule(input), monday_9());
            assert_eq!(rule_text(&r), canonical, "{input}");
            // Canonical text is a fixed point.
            let again = parse(rule(canonical), monday_9());
            assert_eq!(rule_text(&again), canonical);
        }
    }

    #[test]
    fn summaries_read_as_english() {
        let cases = [
            ("FREQ=DAILY", "every day"),
            ("FREQ=DAILY;INTERVAL=3;COUNT=10", "every 3 days, 10 times"),
            ("FREQ=DAILY;COUNT=1", "every day, once"),
            ("FREQ=WEEKLY;UNTIL=20270131", "every week until 2027-01-31"),
            ("FREQ=WEEKLY;UNTIL=20270131T170000Z", "every week until 2027-01-31 17:00 UTC"),
            ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE", "every 2 weeks on Monday and Wednesday"),
            ("FREQ=WEEKLY;BYDAY=MO,WE,FR", "every week on Monday, Wednesday and Friday"),
            ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TU,WE,TH,FR", "every 2 weeks on weekdays"),
            ("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR", "every weekday"),
            ("FREQ=DAILY;BYDAY=SA,SU", "every Saturday and Sunday"),
            ("FREQ=MONTHLY;BYMONTHDAY=15", "every month on day 15"),
            ("FREQ=MONTHLY;BYMONTHDAY=-1", "every month on the last day"),
            ("FREQ=MONTHLY;BYMONTHDAY=1,15", "every month on days 1 and 15"),
            ("FREQ=MONTHLY;BYMONTHDAY=1,-1", "every month on day 1 and the last day"),
            ("FREQ=MONTHLY;BYMONTHDAY=-2", "every month on the second-to-last day"),
            ("FREQ=MONTHLY;BYDAY=1MO", "every month on the first Monday"),
            ("FREQ=MONTHLY;BYDAY=-1FR", "every month on the last Friday"),
            ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "every month on the last weekday"),
            ("FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13", "every month on day 13 if it is a Friday"),
            ("FREQ=MONTHLY;INTERVAL=3", "every 3 months"),
            ("FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=3", "every year on March 3"),
            ("FREQ=YEARLY;BYMONTH=9;BYDAY=1MO", "every year on the first Monday in September"),
            ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=-1", "every year on the last day of February"),
            ("FREQ=YEARLY;INTERVAL=2", "every 2 years"),
            ("FREQ=DAILY;BYMONTH=1,12", "every day in January and December"),
            ("FREQ=HOURLY", "every hour"),
            ("FREQ=HOURLY;INTERVAL=4", "every 4 hours"),
            (
                "FREQ=MONTHLY;BYDAY=MO,TU;BYSETPOS=1,-1",
                "every month on Monday and Tuesday, only the first and last occurrences in each month",
            ),
        ];
        for (input, summary) in cases {
            let r = parse(rule(input), monday_9());
            assert_eq!(r.summary(), summary, "{input}");
        }
    }

    #[test]
    fn completion_anchor_is_mentioned_in_the_summary() {
        let r = parse(rule_from_completion("FREQ=DAILY;INTERVAL=3"), None);
        assert_eq!(r.summary(), "every 3 days, counted from completion");
    }

    #[test]
    fn rule_errors_name_the_problem() {
        let due = monday_9();
        let cases = [
            ("", "invalid RRULE: FREQ is required"),
            ("INTERVAL=2", "invalid RRULE: FREQ is required"),
            (
                "FREQ=WEEKLY;BYDAY=MO,XX",
                "invalid RRULE: unknown weekday 'XX' in BYDAY",
            ),
            (
                "FREQ=WEEKLY;BYDAY=MONDAY",
                "invalid RRULE: unknown weekday 'MONDAY' in BYDAY",
            ),
            (
                "FREQ=MINUTELY",
                "FREQ=MINUTELY is not supported: the shortest recurrence is hourly",
            ),
            (
                "FREQ=SECONDLY",
                "FREQ=SECONDLY is not supported: the shortest recurrence is hourly",
            ),
            ("FREQ=BIWEEKLY", "invalid RRULE: unknown FREQ 'BIWEEKLY'"),
            (
                "FREQ=DAILY;INTERVAL=0",
                "INTERVAL must be a whole number from 1 to 1000, got '0'",
            ),
            (
                "FREQ=DAILY;INTERVAL=1001",
                "INTERVAL must be a whole number from 1 to 1000",
            ),
            (
                "FREQ=DAILY;COUNT=0",
                "COUNT must be a whole number from 1 to 10000",
            ),
            (
                "FREQ=DAILY;COUNT=10001",
                "COUNT must be a whole number from 1 to 10000",
            ),
            (
                "FREQ=DAILY;COUNT=3;UNTIL=20300101",
                "COUNT and UNTIL cannot be used together",
            ),
            (
                "FREQ=DAILY;UNTIL=2030-01-01",
                "UNTIL must be a date (YYYYMMDD)",
            ),
            (
                "FREQ=DAILY;UNTIL=20300230",
                "UNTIL must be a date (YYYYMMDD)",
            ),
            (
                "FREQ=DAILY;UNTIL=20200101",
                "UNTIL (2020-01-01) is before the due date",
            ),
            ("FREQ=DAILY;FREQ=WEEKLY", "FREQ appears more than once"),
            ("FREQ=DAILY;BYHOUR=9", "BYHOUR is not supported"),
            ("FREQ=DAILY;FOO=1", "unknown rule part 'FOO'"),
            ("FREQ=DAILY;DAILY", "expected KEY=VALUE, got 'DAILY'"),
            (
                "DTSTART:20250101T090000Z\nRRULE:FREQ=DAILY",
                "DTSTART is not allowed",
            ),
            ("FREQ=DAILY;DTSTART=20250101", "DTSTART is not allowed"),
            (
                "RRULE:FREQ=DAILY\nEXDATE:20250102T090000Z",
                "EXDATE is not supported",
            ),
            ("RDATE:20250102T090000Z", "RDATE is not supported"),
            ("FREQ=DAILY\nFREQ=WEEKLY", "only one RRULE line is allowed"),
            (
                "FREQ=WEEKLY;BYMONTHDAY=1",
                "BYMONTHDAY cannot be used with FREQ=WEEKLY",
            ),
            ("FREQ=WEEKLY;BYDAY=1MO", "need FREQ=MONTHLY or FREQ=YEARLY"),
            (
                "FREQ=MONTHLY;BYDAY=6MO",
                "must be from 1 to 5 or -5 to -1 for FREQ=MONTHLY",
            ),
            ("FREQ=MONTHLY;BYDAY=0MO", "must be from 1 to 5"),
            (
                "FREQ=MONTHLY;BYMONTHDAY=32",
                "BYMONTHDAY must be a comma-separated list",
            ),
            (
                "FREQ=MONTHLY;BYMONTHDAY=0",
                "BYMONTHDAY must be a comma-separated list",
            ),
            (
                "FREQ=MONTHLY;BYMONTHDAY=1,,2",
                "BYMONTHDAY must be a comma-separated list",
            ),
            (
                "FREQ=YEARLY;BYMONTH=13",
                "BYMONTH must be a comma-separated list",
            ),
            (
                "FREQ=MONTHLY;BYSETPOS=1",
                "BYSETPOS needs BYDAY, BYMONTHDAY or BYMONTH",
            ),
            ("FREQ=WEEKLY;WKST=XX", "unknown weekday 'XX' in WKST"),
            (
                "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
                "never produces an occurrence",
            ),
            (
                "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=10",
                "never produces an occurrence",
            ),
            ("FREQ=MONTHLY;BYDAY=-5MO", "`BYDAY` is `-5`"),
            (
                "FREQ=WEEKLY;BYDAY=MO,TU;BYSETPOS=3",
                "BYSETPOS asks for more than the 2 instances there can be in each week",
            ),
            ("FREQ=DAILY;X=é", "unexpected character 'é'"),
        ];
        for (input, expected) in cases {
            let message = error(rule(input), due);
            assert!(message.contains(expected), "{input:?}: got {message:?}");
        }
        let long = format!("FREQ=DAILY;{}", "INTERVAL=1;".repeat(50));
        assert!(error(rule(&long), due).contains("longer than 500 characters"));
    }

    #[test]
    fn rule_with_due_anchor_needs_due() {
        assert_eq!(
            error(rule("FREQ=DAILY"), None),
            "recurrence needs due_at when anchor is 'due'"
        );
        // Completion-anchored rules do not.
        let r = parse(rule_from_completion("FREQ=DAILY"), None);
        assert_eq!(r.anchor, Anchor::Completion);
    }

    // --- cron -------------------------------------------------------------------------------

    #[test]
    fn cron_is_validated_and_normalised() {
        let r = parse(cron("  0  0 9 *   * Mon-Fri "), monday_9());
        assert_eq!(r.schedule, Schedule::Cron("0 0 9 * * Mon-Fri".into()));
        assert_eq!(r.summary(), "on the cron schedule '0 0 9 * * Mon-Fri'");
        let r = parse(cron("0 30 */2 * * *"), monday_9());
        assert_eq!(r.schedule, Schedule::Cron("0 30 */2 * * *".into()));
    }

    #[test]
    fn cron_errors_name_the_problem() {
        let due = monday_9();
        assert_eq!(
            error(cron("0 9 * * *"), due),
            "cron expressions need exactly 6 fields (sec min hour day-of-month month \
             day-of-week), got 5"
        );
        assert!(error(cron("0 0 9 * * Mon 2030"), due).ends_with("got 7"));
        assert!(error(cron("@daily"), due).ends_with("got 1"));
        let cases = [
            ("0 */5 * * * *", "fires more often than hourly"),
            ("0 0,30 9 * * *", "fires more often than hourly"),
            ("*/30 0 9 * * *", "fires more often than hourly"),
            ("0 0 9 * * 1-5", "use day names"),
            (
                "0 0 25 * * *",
                "invalid cron expression: the hours field '25' is not valid",
            ),
            ("0 0 9 */0 * *", "the day-of-month field '*/0' is not valid"),
            (
                "0 0 9 * * Funday",
                "the day-of-week field 'Funday' is not valid: 'Funday' is not",
            ),
            ("0 0 9 30 Feb *", "never fires"),
            ("0 0 9 * * Mon;", "unexpected character ';'"),
        ];
        for (input, expected) in cases {
            let message = error(cron(input), due);
            assert!(message.contains(expected), "{input:?}: got {message:?}");
        }
    }

    // --- serde ------------------------------------------------------------------------------

    #[test]
    fn input_deserialises_every_shape() {
        let cases = [
            (json!("weekly"), short("weekly")),
            (json!({"rule": "FREQ=DAILY"}), rule("FREQ=DAILY")),
            (
                json!({"anchor": "completion", "rule": "FREQ=DAILY"}),
                rule_from_completion("FREQ=DAILY"),
            ),
            (
                json!({"cron": "0 0 9 * * *", "anchor": "due"}),
                cron("0 0 9 * * *"),
            ),
        ];
        for (value, expected) in cases {
            let input: RecurrenceInput = serde_json::from_value(value).expect("valid shape");
            assert_eq!(input, expected);
        }
    }

    #[test]
    fn input_shape_errors_are_useful() {
        let cases = [
            (
                json!({"rule": "FREQ=DAILY", "extra": 1}),
                "unknown field `extra`",
            ),
            (json!({"anchor": "due"}), "needs \"rule\""),
            (
                json!({"rule": "FREQ=DAILY", "cron": "0 0 9 * * *"}),
                "not both",
            ),
            (
                json!({"rule": "FREQ=DAILY", "anchor": "later"}),
                "unknown variant `later`",
            ),
            (json!({"rule": 5}), "expected a string"),
            (
                json!(42),
                "a shorthand (daily, weekdays, weekly, monthly, yearly)",
            ),
            (json!(["daily"]), "or an object with \"rule\""),
            (json!(null), "invalid type: null"),
        ];
        for (value, expected) in cases {
            let message = serde_json::from_value::<RecurrenceInput>(value.clone())
                .expect_err("bad shape")
                .to_string();
            assert!(message.contains(expected), "{value}: got {message:?}");
        }
        let message =
            serde_json::from_str::<RecurrenceInput>(r#"{"rule":"FREQ=DAILY","rule":"x"}"#)
                .expect_err("duplicate")
                .to_string();
        assert!(message.contains("duplicate field `rule`"), "{message}");
    }

    #[test]
    fn stored_form_round_trips() {
        let r = parse(rule("FREQ=WEEKLY;BYDAY=MO,WE;INTERVAL=2"), monday_9());
        let stored = serde_json::to_value(&r).expect("serialise");
        assert_eq!(
            stored,
            json!({
                "rule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE",
                "anchor": "due",
                "active": true,
                "dtstart": "2025-03-03T09:00:00",
                "tzid": "UTC",
            })
        );
        let back: Recurrence = serde_json::from_value(stored).expect("stored form");
        assert_eq!(back, r);

        // The API form (with summary) reads back too.
        let api = serde_json::to_value(RecurrenceView::from(r.clone())).expect("serialise");
        let back: Recurrence = serde_json::from_value(api).expect("api form");
        assert_eq!(back, r);

        let cancelled: Recurrence = serde_json::from_value(
            json!({"cron": "0 0 9 * * *", "anchor": "completion", "active": false}),
        )
        .expect("cron form");
        assert_eq!(
            cancelled,
            Recurrence {
                schedule: Schedule::Cron("0 0 9 * * *".into()),
                anchor: Anchor::Completion,
                active: false,
                start: None,
            }
        );

        // `active` defaults to true.
        let old: Recurrence =
            serde_json::from_value(json!({"rule": "FREQ=DAILY", "anchor": "due"}))
                .expect("old row");
        assert!(old.active);

        assert!(serde_json::from_value::<Recurrence>(json!({"anchor": "due"})).is_err());
        assert!(serde_json::from_value::<Recurrence>(json!("FREQ=DAILY")).is_err());
        for half in [
            json!({"rule": "FREQ=DAILY", "dtstart": "2025-03-03T09:00:00"}),
            json!({"rule": "FREQ=DAILY", "tzid": "UTC"}),
            json!({"rule": "FREQ=DAILY", "dtstart": "yesterday", "tzid": "UTC"}),
            json!({"rule": "FREQ=DAILY", "dtstart": "2025-03-03T09:00:00", "tzid": "Mars/Base"}),
        ] {
            assert!(
                serde_json::from_value::<Recurrence>(half.clone()).is_err(),
                "{half}"
            );
        }
    }

    #[test]
    fn response_json_has_a_summary() {
        let r = parse(rule("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE"), monday_9());
        assert_eq!(
            serde_json::to_value(RecurrenceView::from(r)).expect("serialise"),
            json!({
                "rule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE",
                "anchor": "due",
                "active": true,
                "dtstart": "2025-03-03T09:00:00",
                "tzid": "UTC",
                "summary": "every 2 weeks on Monday and Wednesday",
            })
        );
        let c = parse(cron("0 0 9 * * Mon-Fri"), monday_9());
        assert_eq!(
            serde_json::to_value(RecurrenceView::from(c)).expect("serialise")["summary"],
            "on the cron schedule '0 0 9 * * Mon-Fri'"
        );
    }

    #[test]
    fn openapi_schemas_are_available() {
        let schema = serde_json::to_value(RecurrenceView::schema()).expect("schema json");
        let text = schema.to_string();
        for field in [
            "rule", "cron", "anchor", "active", "summary", "dtstart", "tzid",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        assert_eq!(RecurrenceView::name(), "Recurrence");
        let mut refs = Vec::new();
        RecurrenceView::schemas(&mut refs);
        assert!(refs.iter().any(|(name, _)| name == "Anchor"));

        let input = serde_json::to_value(RecurrenceInput::schema()).expect("schema json");
        let text = input.to_string();
        assert!(
            text.contains("RecurrenceRuleInput") && text.contains("RecurrenceCronInput"),
            "{text}"
        );
    }

    // --- next_due ---------------------------------------------------------------------------

    #[test]
    fn daily_keeps_local_time_across_dst_in_berlin() {
        // Clocks go forward on 2025-03-30 and back on 2025-10-26.
        for (start_day, month) in [(28, 3), (24, 10)] {
            let due = local(BERLIN, 2025, month, start_day, 9, 0);
            let r = parse(short("daily"), Some(due));
            let dates = series(&r, due.with_timezone(&Utc), BERLIN, 5);
            for d in &dates {
                let l = d.with_timezone(&BERLIN);
                assert_eq!((l.hour(), l.minute()), (9, 0), "{l}");
            }
            let days: Vec<NaiveDate> = dates
                .iter()
                .map(|d| d.with_timezone(&BERLIN).date_naive())
                .collect();
            let expected: Vec<NaiveDate> = due.date_naive().iter_days().take(5).collect();
            assert_eq!(days, expected);
        }
        // In UTC the time does move: 08:00Z before, 07:00Z after spring-forward.
        let due = local(BERLIN, 2025, 3, 29, 9, 0);
        let r = parse(short("daily"), Some(due));
        let next = r.next_due(
            due.with_timezone(&Utc),
            due.with_timezone(&Utc),
            due.with_timezone(&Utc),
            1,
            BERLIN,
        );
        assert_eq!(next, Some(utc(2025, 3, 30, 7, 0)));
    }

    #[test]
    fn a_time_inside_the_dst_gap_moves_forward() {
        let due = local(BERLIN, 2025, 3, 29, 2, 30);
        let r = parse(short("daily"), Some(due));
        let dates = series(&r, due.with_timezone(&Utc), BERLIN, 3);
        let times: Vec<(u32, u32)> = dates
            .iter()
            .map(|d| {
                let l = d.with_timezone(&BERLIN);
                (l.hour(), l.minute())
            })
            .collect();
        // 02:30 does not exist on the 30th: 03:30 CEST (= 02:30 CET) instead.
        assert_eq!(times, [(2, 30), (3, 30), (2, 30)]);
    }

    #[test]
    fn count_limits_occurrence_numbers() {
        let due = local(Tz::UTC, 2025, 3, 3, 9, 0);
        let r = parse(rule("FREQ=DAILY;COUNT=3"), Some(due));
        let start = due.with_timezone(&Utc);
        assert_eq!(series(&r, start, Tz::UTC, 10).len(), 3);
        assert_eq!(
            r.next_due(start, start, start, 2, Tz::UTC),
            Some(utc(2025, 3, 4, 9, 0))
        );
        assert_eq!(r.next_due(start, start, start, 3, Tz::UTC), None);
        assert_eq!(r.next_due(start, start, start, 4, Tz::UTC), None);
    }

    #[test]
    fn until_ends_the_series() {
        let due = local(BERLIN, 2025, 3, 3, 9, 0);
        let start = due.with_timezone(&Utc);
        // A date: inclusive, in the task's zone.
        let r = parse(rule("FREQ=DAILY;UNTIL=20250305"), Some(due));
        assert_eq!(series(&r, start, BERLIN, 10).len(), 3);
        // A UTC date-time: 08:00Z is exactly the third occurrence (09:00 CET).
        let r = parse(rule("FREQ=DAILY;UNTIL=20250305T080000Z"), Some(due));
        assert_eq!(series(&r, start, BERLIN, 10).len(), 3);
        let r = parse(rule("FREQ=DAILY;UNTIL=20250305T075959Z"), Some(due));
        assert_eq!(series(&r, start, BERLIN, 10).len(), 2);
        // A local date-time, read in the task's zone.
        let r = parse(rule("FREQ=DAILY;UNTIL=20250305T090000"), Some(due));
        assert_eq!(series(&r, start, BERLIN, 10).len(), 3);
    }

    #[test]
    fn biweekly_on_two_days() {
        // Monday 2025-03-03.
        let due = local(Tz::UTC, 2025, 3, 3, 9, 0);
        let r = parse(rule("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE"), Some(due));
        let days: Vec<u32> = series(&r, due.with_timezone(&Utc), Tz::UTC, 6)
            .iter()
            .map(|d| d.day())
            .collect();
        assert_eq!(days, [3, 5, 17, 19, 31, 2]);
    }

    #[test]
    fn due_anchor_does_not_skip_past_instances() {
        let due = local(Tz::UTC, 2025, 3, 3, 9, 0);
        let r = parse(short("daily"), Some(due));
        let start = due.with_timezone(&Utc);
        // Completed ten days late: the next one is still the day after the current due date.
        let next = r.next_due(start, start, utc(2025, 3, 13, 12, 0), 1, Tz::UTC);
        assert_eq!(next, Some(utc(2025, 3, 4, 9, 0)));
    }

    #[test]
    fn due_anchor_stays_aligned_far_into_a_series() {
        let due = local(BERLIN, 2020, 1, 1, 9, 0); // a Wednesday
        let start = due.with_timezone(&Utc);
        // (rule, an instance in mid-2025, the instance after it)
        let cases = [
            ("FREQ=DAILY;INTERVAL=3", (6, 30, 9), (7, 3, 9)),
            ("FREQ=HOURLY;INTERVAL=5", (6, 30, 6), (6, 30, 11)),
            ("FREQ=WEEKLY;INTERVAL=2", (6, 25, 9), (7, 9, 9)),
            ("FREQ=MONTHLY;INTERVAL=5", (6, 1, 9), (11, 1, 9)),
        ];
        for (text, (m, d, h), (next_m, next_d, next_h)) in cases {
            let r = parse(rule(text), Some(due));
            let current = local(BERLIN, 2025, m, d, h, 0).with_timezone(&Utc);
            let expected = local(BERLIN, 2025, next_m, next_d, next_h, 0).with_timezone(&Utc);
            assert_eq!(
                r.next_due(start, current, current, 1, BERLIN),
                Some(expected),
                "{text}"
            );
        }
        let r = parse(rule("FREQ=YEARLY;INTERVAL=3"), Some(due));
        let current = local(BERLIN, 2023, 1, 1, 9, 0).with_timezone(&Utc);
        let expected = local(BERLIN, 2026, 1, 1, 9, 0).with_timezone(&Utc);
        assert_eq!(
            r.next_due(start, current, current, 1, BERLIN),
            Some(expected)
        );
    }

    #[test]
    fn fast_forward_matches_a_full_scan() {
        let due = local(BERLIN, 2021, 1, 31, 9, 30);
        let start = due.with_timezone(&Utc);
        let rules = [
            "FREQ=DAILY;INTERVAL=7",
            "FREQ=HOURLY;INTERVAL=13",
            "FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,SU;WKST=SU",
            "FREQ=MONTHLY;INTERVAL=2",
            "FREQ=MONTHLY;INTERVAL=4;BYDAY=-1FR",
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            "FREQ=YEARLY;INTERVAL=2",
            "FREQ=YEARLY;BYMONTH=2,8;BYDAY=2WE",
        ];
        let currents = [
            utc(2021, 2, 1, 0, 0),
            utc(2022, 7, 15, 3, 0),
            utc(2024, 2, 29, 8, 30),
            utc(2025, 10, 26, 1, 30),
        ];
        for text in rules {
            let spec = RuleSpec::parse(text).expect("valid");
            let start_local = start.with_timezone(&BERLIN).naive_local();
            for current in currents {
                let full =
                    spec.first_instance(start_local, start_local, BERLIN, |_, at| at > current);
                let fast = spec.next_after_due(start, current, BERLIN);
                assert_eq!(fast, full, "{text} after {current}");
                assert!(fast.is_some());
            }
        }
    }

    #[test]
    fn completion_anchor_restarts_from_completion() {
        let due = local(BERLIN, 2025, 3, 3, 9, 0); // Monday
        let start = due.with_timezone(&Utc);
        let r = parse(rule_from_completion("FREQ=DAILY;INTERVAL=3"), Some(due));
        // Done on Thursday afternoon: three days later at the series' 09:00.
        let done = local(BERLIN, 2025, 3, 6, 15, 0).with_timezone(&Utc);
        assert_eq!(
            r.next_due(start, start, done, 1, BERLIN),
            Some(local(BERLIN, 2025, 3, 9, 9, 0).with_timezone(&Utc))
        );
        // Done early in the morning, before 09:00: still three days later.
        let done = local(BERLIN, 2025, 3, 6, 7, 0).with_timezone(&Utc);
        assert_eq!(
            r.next_due(start, start, done, 1, BERLIN),
            Some(local(BERLIN, 2025, 3, 9, 9, 0).with_timezone(&Utc))
        );

        // Weekly on Monday, done on Wednesday: the coming Monday.
        let r = parse(rule_from_completion("FREQ=WEEKLY;BYDAY=MO"), Some(due));
        let done = local(BERLIN, 2025, 3, 5, 18, 0).with_timezone(&Utc);
        assert_eq!(
            r.next_due(start, start, done, 1, BERLIN),
            Some(local(BERLIN, 2025, 3, 10, 9, 0).with_timezone(&Utc))
        );

        // Plain monthly from completion on the 31st: the last day of the next month.
        let r = parse(rule_from_completion("FREQ=MONTHLY"), Some(due));
        let done = local(BERLIN, 2025, 1, 31, 18, 0).with_timezone(&Utc);
        assert_eq!(
            r.next_due(start, start, done, 1, BERLIN),
            Some(local(BERLIN, 2025, 2, 28, 9, 0).with_timezone(&Utc))
        );

        // Every 4 hours from completion, to the minute.
        let r = parse(rule_from_completion("FREQ=HOURLY;INTERVAL=4"), Some(due));
        let done = local(BERLIN, 2025, 3, 5, 10, 17).with_timezone(&Utc);
        assert_eq!(
            r.next_due(start, start, done, 1, BERLIN),
            Some(local(BERLIN, 2025, 3, 5, 14, 17).with_timezone(&Utc))
        );

        // Without a due date.
        let r = parse(rule_from_completion("FREQ=WEEKLY"), None);
        let done = utc(2025, 3, 5, 18, 0);
        assert_eq!(
            r.next_due(done, done, done, 1, Tz::UTC),
            Some(utc(2025, 3, 12, 18, 0))
        );
    }

    #[test]
    fn cron_runs_in_the_task_time_zone() {
        let due = local(NEW_YORK, 2025, 3, 7, 9, 0); // Friday
        let r = parse(cron("0 0 9 * * Mon-Fri"), Some(due));
        let dates = series(&r, due.with_timezone(&Utc), NEW_YORK, 4);
        let expected = [
            local(NEW_YORK, 2025, 3, 7, 9, 0),
            local(NEW_YORK, 2025, 3, 10, 9, 0), // after the DST change on the 9th
            local(NEW_YORK, 2025, 3, 11, 9, 0),
            local(NEW_YORK, 2025, 3, 12, 9, 0),
        ];
        assert_eq!(dates, expected.map(|d| d.with_timezone(&Utc)));
        assert_eq!(dates[0].hour(), 14);
        assert_eq!(dates[1].hour(), 13);

        let r = Recurrence {
            anchor: Anchor::Completion,
            ..r
        };
        let start = due.with_timezone(&Utc);
        let done = local(NEW_YORK, 2025, 3, 11, 10, 0).with_timezone(&Utc);
        assert_eq!(
            r.next_due(start, start, done, 1, NEW_YORK),
            Some(local(NEW_YORK, 2025, 3, 12, 9, 0).with_timezone(&Utc))
        );
        // Done before it was due: the next fire after the due date, not the same one again.
        let done = local(NEW_YORK, 2025, 3, 7, 8, 0).with_timezone(&Utc);
        assert_eq!(
            r.next_due(start, start, done, 1, NEW_YORK),
            Some(local(NEW_YORK, 2025, 3, 10, 9, 0).with_timezone(&Utc))
        );
    }

    #[test]
    fn inactive_or_unreadable_series_stop() {
        let due = local(Tz::UTC, 2025, 3, 3, 9, 0);
        let start = due.with_timezone(&Utc);
        let mut r = parse(short("daily"), Some(due));
        r.active = false;
        assert_eq!(r.next_due(start, start, start, 1, Tz::UTC), None);
        let broken = Recurrence {
            schedule: Schedule::Rule("garbage".into()),
            anchor: Anchor::Due,
            active: true,
            start: None,
        };
        assert_eq!(broken.next_due(start, start, start, 1, Tz::UTC), None);
        assert_eq!(broken.summary(), "on the schedule 'garbage'");
        let far = Utc
            .with_ymd_and_hms(200_000, 1, 1, 0, 0, 0)
            .single()
            .expect("far future");
        let r = parse(short("daily"), Some(due));
        assert_eq!(r.next_due(far, far, far, 1, Tz::UTC), None);
    }

    #[test]
    fn garbage_never_panics() {
        let odd = [
            "",
            " ",
            ";",
            ";;;",
            "=",
            "==",
            "FREQ",
            "FREQ=",
            "=DAILY",
            "RRULE:",
            "RRULE:RRULE:",
            "FREQ=DAILY;;",
            "FREQ=DAILY;INTERVAL=-1",
            "FREQ=DAILY;INTERVAL=99999999999999999999",
            "FREQ=DAILY;COUNT=-5",
            "FREQ=MONTHLY;BYDAY=--1MO",
            "FREQ=MONTHLY;BYDAY=+-1MO",
            "FREQ=MONTHLY;BYDAY=99999MO",
            "FREQ=MONTHLY;BYDAY=",
            "FREQ=MONTHLY;BYDAY=,",
            "FREQ=MONTHLY;BYDAY=1",
            "FREQ=MONTHLY;BYDAY=M",
            "FREQ=YEARLY;BYDAY=-53MO",
            "FREQ=YEARLY;BYDAY=53MO",
            "FREQ=YEARLY;BYSETPOS=-366;BYMONTH=1",
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;INTERVAL=1000",
            "FREQ=DAILY;UNTIL=99991231T235959Z",
            "FREQ=DAILY;UNTIL=00000101",
            "FREQ=DAILY;UNTIL=20250101T246060",
            "FREQ=DAILY;UNTIL=20250101T120000ZZ",
            "FREQ=HOURLY;BYSETPOS=24;BYMONTH=1",
            "FREQ=HOURLY;INTERVAL=1000;BYMONTHDAY=31;BYMONTH=2,4",
            "FREQ=WEEKLY;BYDAY=MO;BYSETPOS=53",
            "RRULE:FREQ=DAILY\n\n",
            "\n\nDTSTART",
            "DTSTART",
            "EXDATE;TZID=X:1",
            "RRULE;X=1:FREQ=DAILY",
            "FREQ=DAILY;BYDAY=ÄÖ",
            "FREQ=DAILY\u{0}",
            "ＦＲＥＱ=DAILY",
            "🙂",
            "FREQ=DAILY;BYDAY=1🙂",
            "FREQ=MONTHLY;BYMONTHDAY=-31;BYMONTH=2",
            "FREQ=MONTHLY;BYMONTHDAY=31;BYMONTH=2,4",
            "0 0 9 * * *",
            "* * * * * *",
            "0 0 0 0 0 0",
            "a b c d e f",
            "0 0 9 * * Mon-",
            "0 0 9 * * -Mon",
            "0 0 9 ? ? ?",
            "/ / / / / /",
            "0 0 9 31 2-4 Mon",
            "0 0 9 * * Mon,Mon,Mon",
            "0 0 99999999999999999999 * * *",
            "0 0 9 */0 * *",
            "fortnightly",
            "MONTHLY",
            "  daily\n",
        ];
        let dues = [
            None,
            Some(local(Tz::UTC, 2025, 3, 3, 9, 0)),
            Some(local(BERLIN, 2025, 3, 30, 3, 30)),
            Some(local(Tz::UTC, 9999, 12, 31, 23, 0)),
        ];
        let zones = [
            Tz::UTC,
            BERLIN,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Pacific::Apia,
        ];
        for text in odd {
            let inputs = [
                short(text),
                rule(text),
                rule_from_completion(text),
                cron(text),
                RecurrenceInput::Cron(CronInput {
                    cron: text.into(),
                    anchor: Anchor::Completion,
                }),
            ];
            for input in inputs {
                for due in dues {
                    if let Ok(r) = Recurrence::parse(&input, due) {
                        let _ = r.summary();
                        let _ = serde_json::to_value(&r);
                        for tz in zones {
                            let start =
                                due.map_or(utc(2025, 3, 3, 9, 0), |d| d.with_timezone(&Utc));
                            let _ = r.next_due(start, start, start, 1, tz);
                        }
                    }
                }
            }
            // Stored values are not validated, so next_due and summary must cope with anything.
            for schedule in [Schedule::Rule(text.into()), Schedule::Cron(text.into())] {
                for anchor in [Anchor::Due, Anchor::Completion] {
                    let r = Recurrence {
                        schedule: schedule.clone(),
                        anchor,
                        active: true,
                        start: None,
                    };
                    let _ = r.summary();
                    let start = utc(2025, 3, 3, 9, 0);
                    let _ = r.next_due(start, start, start, 1, BERLIN);
                    let end = Utc
                        .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                        .single()
                        .expect("max");
                    let _ = r.next_due(start, end, end, 1, BERLIN);
                }
            }
        }
    }
}
