//! Task request bodies and their validation into [`TaskFields`] ("parse, don't validate").

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use shared_events::recurrence::{Anchor, Recurrence, RecurrenceInput};
use shared_events::Priority;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::error::{ApiError, FieldErrors};

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 4000;
pub const TAGS_MAX: usize = 20;
pub const TAG_MAX: usize = 32;
pub const REMINDER_MAX: i64 = 525_600;

/// Body of `POST /tasks` and `PUT /tasks/{id}`: the whole editable state of a task.
/// Only `title` is required. Values are checked in [`TaskFields::from_body`] so that every
/// problem is reported with its field name; the schema says the same (see [`NOT_BLANK`]).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    /// 1 to 200 characters after trimming.
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\x00]*[^\x00\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00]*$")]
    pub title: Option<String>,
    /// At most 4000 characters.
    #[schema(max_length = 4000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    pub completed: Option<bool>,
    /// none, low, medium, high or urgent (default none).
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<String>,
    /// At most 20 distinct tags of 1 to 32 characters.
    #[schema(value_type = Option<Vec<Tag>>, max_items = 20)]
    pub tags: Option<Vec<String>>,
    /// RFC 3339 date-time, stored in UTC; its year must be 0001 to 9999 in UTC too.
    #[schema(value_type = Option<DateTime<Utc>>, pattern = r"^\s*(?!0000|0001|9999)[0-9]{4}-")]
    pub due_at: Option<String>,
    /// IANA time zone (default UTC).
    #[schema(value_type = Option<TimeZoneName>)]
    pub timezone: Option<String>,
    /// Minutes before `due_at`, 0 to 525600; needs `due_at`.
    #[schema(minimum = 0, maximum = 525_600)]
    #[serde(default, deserialize_with = "integral")]
    pub reminder_minutes_before: Option<i64>,
    #[schema(value_type = Option<RecurrenceBody>)]
    pub recurrence: Option<Value>,
}

/// Body of `PATCH /tasks/{id}`: a field left out is kept, `null` clears a nullable field.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\x00]*[^\x00\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00]*$")]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 4000, pattern = r"^[^\x00]*$")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    pub completed: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Priority)]
    pub priority: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<Tag>>, max_items = 20)]
    pub tags: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>, pattern = r"^\s*(?!0000|0001|9999)[0-9]{4}-")]
    pub due_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = TimeZoneName)]
    pub timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present_integral")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 525_600)]
    pub reminder_minutes_before: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RecurrenceBody>)]
    pub recurrence: Option<Option<Value>>,
}

/// The schema of one tag: 1 to 32 characters, not blank, no NUL.
pub struct Tag;

impl utoipa::PartialSchema for Tag {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(TAG_MAX))
            .pattern(Some(NOT_BLANK))
            .into()
    }
}
impl ToSchema for Tag {}

/// Text with something besides whitespace and no NUL (which PostgreSQL text cannot hold).
// The whitespace `trim` removes, spelled out: `\s` means less in some readings of the schema
// (ASCII only in schemathesis', no U+0085 in ECMA-262's), which let a tag of one U+0085 or
// U+00A0 pass as valid and be refused.
pub const NOT_BLANK: &str = r"^[^\x00]*[^\x00\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00]*$";

/// The schema of a time zone: every IANA name the server knows.
pub struct TimeZoneName;

impl utoipa::PartialSchema for TimeZoneName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())))
            .into()
    }
}
impl ToSchema for TimeZoneName {}

/// The schema of `recurrence` in a body: a shorthand, or rules and cron expressions of the
/// shapes that are always valid (the server accepts any RRULE of hourly or longer frequency and
/// any six-field cron expression firing at most hourly, answering 422 for others).
pub struct RecurrenceBody;

impl utoipa::PartialSchema for RecurrenceBody {
    fn schema() -> RefOr<Schema> {
        let anchor = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["due", "completion"]))
        };
        let object = |name: &str, pattern: &str, example: &str| {
            ObjectBuilder::new()
                .property(
                    name,
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(pattern))
                        .examples([example]),
                )
                .required(name)
                .property("anchor", anchor())
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ))
        };
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["daily", "weekdays", "weekly", "monthly", "yearly"])),
            )
            .item(object(
                "rule",
                r"^FREQ=(HOURLY|DAILY|WEEKLY|MONTHLY|YEARLY)(;INTERVAL=[1-9][0-9]?)?$",
                "FREQ=WEEKLY;INTERVAL=2",
            ))
            .item(object(
                "cron",
                r"^0 [1-5]?[0-9] ([01]?[0-9]|2[0-3]|\*) \* \* \*$",
                "0 30 9 * * *",
            ))
            .into()
    }
}
impl ToSchema for RecurrenceBody {}

/// An integer that JSON may also spell as an integral number (`5.0`): JSON Schema's `integer`.
pub fn integral<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|n| {
            integer(&n).ok_or_else(|| serde::de::Error::custom(format!("{n} is not an integer")))
        })
        .transpose()
}

/// [`integral`] for a required field.
pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    integral(deserializer)?.ok_or_else(|| serde::de::Error::custom("expected an integer, not null"))
}

fn present_integral<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<i64>>, D::Error> {
    integral(deserializer).map(Some)
}

/// `n` as an i64 if it is a whole number in range.
pub fn integer(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (i64::MIN as f64..i64::MAX as f64).contains(f))
            .map(|f| f as i64)
    })
}

/// Distinguishes `"field": null` (Some(None)) from a missing field (None, via `default`).
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The validated, normalised editable state of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFields {
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub timezone: Tz,
    pub reminder_minutes_before: Option<i32>,
    pub recurrence: Option<Recurrence>,
}

/// Collects every field's problem so one response names them all.
#[derive(Default)]
struct Problems(FieldErrors);

impl Problems {
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| {
                self.0.entry(field.to_owned()).or_insert(message);
            })
            .ok()
    }

    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| message.into());
    }

    fn finish<T>(self, value: T) -> Result<T, ApiError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

/// PostgreSQL text (and JSONB) cannot store U+0000; refuse it as a field problem.
fn no_nul(raw: &str) -> Result<(), String> {
    if raw.contains('\0') {
        Err("must not contain NUL (U+0000) characters".to_owned())
    } else {
        Ok(())
    }
}

fn title(raw: &str) -> Result<String, String> {
    no_nul(raw)?;
    let title = raw.trim();
    let len = title.chars().count();
    if len == 0 || len > TITLE_MAX {
        return Err(format!(
            "must be 1 to {TITLE_MAX} characters after trimming (got {len})"
        ));
    }
    Ok(title.to_owned())
}

fn description(raw: String) -> Result<Option<String>, String> {
    no_nul(&raw)?;
    let len = raw.chars().count();
    if len > DESCRIPTION_MAX {
        return Err(format!(
            "must be at most {DESCRIPTION_MAX} characters (got {len})"
        ));
    }
    Ok((!raw.trim().is_empty()).then_some(raw))
}

fn priority(raw: &str) -> Result<Priority, String> {
    Priority::parse(raw).ok_or_else(|| {
        format!("unknown priority {raw:?}; expected one of none, low, medium, high, urgent")
    })
}

/// A tag as tasks store it and lists match it: trimmed, not blank, and at most [`TAG_MAX`]
/// characters as sent (the OpenAPI document's `maxLength` counts what is sent).
pub fn tag_as_stored(raw: &str) -> Result<&str, String> {
    let tag = raw.trim();
    if tag.is_empty() || raw.chars().count() > TAG_MAX {
        return Err(format!(
            "each tag must be 1 to {TAG_MAX} characters (got {tag:?})"
        ));
    }
    Ok(tag)
}

fn tags(raw: Vec<String>) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for tag in raw {
        no_nul(&tag).map_err(|e| format!("each tag {e}"))?;
        let tag = tag_as_stored(&tag)?;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    if tags.len() > TAGS_MAX {
        return Err(format!(
            "at most {TAGS_MAX} distinct tags (got {})",
            tags.len()
        ));
    }
    Ok(tags)
}

pub fn parse_datetime(raw: &str) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(raw.trim())
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("must be an RFC 3339 date-time such as 2026-12-01T09:00:00Z ({e})"))?;
    // In UTC too it must have a four-digit year, or the API could not write it back as RFC 3339.
    if (1..=9999).contains(&at.year()) {
        Ok(at)
    } else {
        Err(format!(
            "must fall within the years 0001 to 9999 in UTC (got {raw:?})"
        ))
    }
}

fn timezone(raw: &str) -> Result<Tz, String> {
    raw.trim()
        .parse::<Tz>()
        .map_err(|_| format!("unknown time zone {raw:?}; use an IANA name such as Europe/Berlin"))
}

fn reminder(raw: i64) -> Result<i32, String> {
    if (0..=REMINDER_MAX).contains(&raw) {
        Ok(raw as i32)
    } else {
        Err(format!(
            "must be between 0 and {REMINDER_MAX} minutes (got {raw})"
        ))
    }
}

fn recurrence_input(raw: Value) -> Result<RecurrenceInput, String> {
    serde_json::from_value(raw).map_err(|e| {
        format!(
            "must be one of daily, weekdays, weekly, monthly, yearly, \
             {{\"rule\": \"<RRULE>\", \"anchor\": \"due\"|\"completion\"}} or \
             {{\"cron\": \"<6-field cron>\", \"anchor\": ...}} ({e})"
        )
    })
}

fn not_null<T>(field: &str, value: Option<T>, problems: &mut Problems) -> Option<T> {
    if value.is_none() {
        problems.add(field, "must not be null");
    }
    value
}

impl TaskFields {
    /// Validate a full body (create or replace).
    pub fn from_body(body: TaskBody) -> Result<TaskFields, ApiError> {
        let mut p = Problems::default();
        let title = match body.title {
            Some(t) => p.check("title", title(&t)),
            None => {
                p.add("title", "is required");
                None
            }
        };
        let description = body
            .description
            .and_then(|d| p.check("description", description(d)))
            .flatten();
        let priority = body
            .priority
            .map_or(Some(Priority::None), |v| p.check("priority", priority(&v)));
        let tags = body
            .tags
            .map_or(Some(Vec::new()), |v| p.check("tags", tags(v)));
        let due_at = body
            .due_at
            .and_then(|v| p.check("due_at", parse_datetime(&v)));
        let tz = body
            .timezone
            .map_or(Some(Tz::UTC), |v| p.check("timezone", timezone(&v)));
        let reminder = body
            .reminder_minutes_before
            .and_then(|v| p.check("reminder_minutes_before", reminder(v)));
        let recurrence = body
            .recurrence
            .and_then(|v| p.check("recurrence", recurrence_input(v)));
        // A field that failed stands in with its default so the checks across fields still run
        // and every problem is named at once; `finish` refuses the draft when any was found.
        let draft = Draft {
            fields: TaskFields {
                title: title.unwrap_or_default(),
                description,
                completed: body.completed.unwrap_or(false),
                priority: priority.unwrap_or(Priority::None),
                tags: tags.unwrap_or_default(),
                due_at,
                timezone: tz.unwrap_or(Tz::UTC),
                reminder_minutes_before: reminder,
                recurrence: None,
            },
            new_recurrence: recurrence,
        };
        draft.finish(p)
    }

    /// Apply a partial update on top of the current state and validate the result.
    pub fn apply(&self, patch: TaskPatch) -> Result<TaskFields, ApiError> {
        let mut p = Problems::default();
        let mut next = self.clone();
        if let Some(v) = patch.title {
            if let Some(t) = not_null("title", v, &mut p).and_then(|t| p.check("title", title(&t)))
            {
                next.title = t;
            }
        }
        if let Some(v) = patch.description {
            next.description = v.and_then(|d| p.check("description", description(d)).flatten());
        }
        if let Some(v) = patch.completed {
            if let Some(c) = not_null("completed", v, &mut p) {
                next.completed = c;
            }
        }
        if let Some(v) = patch.priority {
            if let Some(pr) =
                not_null("priority", v, &mut p).and_then(|v| p.check("priority", priority(&v)))
            {
                next.priority = pr;
            }
        }
        if let Some(v) = patch.tags {
            // null clears the tags, like an empty list.
            if let Some(t) = p.check("tags", tags(v.unwrap_or_default())) {
                next.tags = t;
            }
        }
        if let Some(v) = patch.due_at {
            next.due_at = v.and_then(|d| p.check("due_at", parse_datetime(&d)));
        }
        if let Some(v) = patch.timezone {
            if let Some(tz) =
                not_null("timezone", v, &mut p).and_then(|v| p.check("timezone", timezone(&v)))
            {
                next.timezone = tz;
            }
        }
        if let Some(v) = patch.reminder_minutes_before {
            next.reminder_minutes_before =
                v.and_then(|m| p.check("reminder_minutes_before", reminder(m)));
        }
        let mut new_recurrence = None;
        if let Some(v) = patch.recurrence {
            match v {
                None => next.recurrence = None,
                Some(raw) => new_recurrence = p.check("recurrence", recurrence_input(raw)),
            }
        }
        Draft {
            fields: next,
            new_recurrence,
        }
        .finish(p)
    }
}

/// Fields whose checks depend on each other run last, on the merged state.
struct Draft {
    fields: TaskFields,
    new_recurrence: Option<RecurrenceInput>,
}

impl Draft {
    fn finish(mut self, mut p: Problems) -> Result<TaskFields, ApiError> {
        let f = &mut self.fields;
        // An unreadable due_at is its own problem, not also the reminder's.
        if f.reminder_minutes_before.is_some() && f.due_at.is_none() && !p.0.contains_key("due_at")
        {
            p.add("reminder_minutes_before", "needs due_at");
        }
        let local_due = f.due_at.map(|d| d.with_timezone(&f.timezone));
        if let Some(input) = &self.new_recurrence {
            f.recurrence = p.check(
                "recurrence",
                Recurrence::parse(input, local_due).map_err(|e| e.to_string()),
            );
        } else if let Some(r) = &f.recurrence {
            if r.active && r.anchor == Anchor::Due && f.due_at.is_none() {
                p.add(
                    "due_at",
                    "a task that recurs from its due date needs due_at",
                );
            }
        }
        p.finish(self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> TaskBody {
        serde_json::from_value(v).expect("body shape")
    }

    fn fields(v: Value) -> TaskFields {
        TaskFields::from_body(body(v)).expect("valid")
    }

    fn problems(result: Result<TaskFields, ApiError>) -> FieldErrors {
        match result {
            Err(ApiError::Validation(f)) => f,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn minimal_body_gets_defaults() {
        let f = fields(json!({"title": "  Buy milk  "}));
        assert_eq!(f.title, "Buy milk");
        assert_eq!(f.priority, Priority::None);
        assert_eq!(f.timezone, Tz::UTC);
        assert!(f.tags.is_empty() && !f.completed && f.due_at.is_none());
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let long = "x".repeat(TITLE_MAX + 1);
        let errors = problems(TaskFields::from_body(body(json!({
            "title": long,
            "description": "d".repeat(DESCRIPTION_MAX + 1),
            "priority": "critical",
            "tags": ["ok", ""],
            "due_at": "tomorrow",
            "timezone": "Mars/Olympus",
            "reminder_minutes_before": 525601,
            "recurrence": "fortnightly"
        }))));
        for field in [
            "title",
            "description",
            "priority",
            "tags",
            "due_at",
            "timezone",
            "reminder_minutes_before",
        ] {
            assert!(errors.contains_key(field), "{field} missing in {errors:?}");
        }
        assert!(errors["timezone"].contains("Mars/Olympus"));
    }

    #[test]
    fn nul_characters_are_field_problems() {
        let errors = problems(TaskFields::from_body(body(json!({
            "title": "a\u{0}", "description": "\u{0}", "tags": ["ok", "b\u{0}"]
        }))));
        for field in ["title", "description", "tags"] {
            assert!(errors[field].contains("NUL"), "{field}: {errors:?}");
        }
    }

    #[test]
    fn reminder_without_due_at_is_named_next_to_other_problems() {
        let errors = problems(TaskFields::from_body(body(json!({
            "title": "", "reminder_minutes_before": 5
        }))));
        assert_eq!(errors["reminder_minutes_before"], "needs due_at");
        assert!(errors.contains_key("title"));
    }

    #[test]
    fn title_is_required_and_trimmed() {
        assert!(problems(TaskFields::from_body(body(json!({})))).contains_key("title"));
        assert!(
            problems(TaskFields::from_body(body(json!({"title": "   "})))).contains_key("title")
        );
        let exactly = "é".repeat(TITLE_MAX);
        assert_eq!(
            fields(json!({ "title": exactly })).title.chars().count(),
            TITLE_MAX
        );
    }

    #[test]
    fn tags_are_trimmed_and_deduplicated() {
        let f = fields(json!({"title": "t", "tags": [" home ", "home", "work"]}));
        assert_eq!(f.tags, vec!["home", "work"]);
        let many: Vec<String> = (0..=TAGS_MAX).map(|i| format!("t{i}")).collect();
        assert!(problems(TaskFields::from_body(body(
            json!({"title": "t", "tags": many})
        )))
        .contains_key("tags"));
        let dup: Vec<String> = (0..30).map(|_| "same".to_owned()).collect();
        assert_eq!(fields(json!({"title": "t", "tags": dup})).tags.len(), 1);
        // Length as sent, as the schema's maxLength counts it: spaces that trimming removes too.
        let padded = format!(" {}", "x".repeat(TAG_MAX));
        assert!(problems(TaskFields::from_body(body(
            json!({"title": "t", "tags": [padded]})
        )))
        .contains_key("tags"));
        let full = "x".repeat(TAG_MAX);
        assert_eq!(fields(json!({"title": "t", "tags": [full]})).tags.len(), 1);
    }

    #[test]
    fn due_at_must_stay_writable_as_rfc_3339_in_utc() {
        for edge in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:30:00+01:00"] {
            assert!(
                parse_datetime(edge).unwrap_err().contains("0001 to 9999"),
                "{edge}"
            );
        }
        assert_eq!(
            parse_datetime("9999-12-31T23:59:59Z").unwrap().to_rfc3339(),
            "9999-12-31T23:59:59+00:00"
        );
    }

    #[test]
    fn due_at_is_stored_in_utc_and_reminder_needs_it() {
        let f = fields(json!({"title": "t", "due_at": "2026-12-01T10:00:00+01:00"}));
        assert_eq!(f.due_at.unwrap().to_rfc3339(), "2026-12-01T09:00:00+00:00");
        let errors = problems(TaskFields::from_body(body(
            json!({"title": "t", "reminder_minutes_before": 15}),
        )));
        assert_eq!(errors["reminder_minutes_before"], "needs due_at");
    }

    #[test]
    fn recurrence_is_normalised_against_the_due_date() {
        let f = fields(json!({
            "title": "t", "due_at": "2026-12-01T09:00:00Z", "recurrence": "weekly"
        }));
        let r = f.recurrence.expect("recurrence");
        assert!(r.active);
        assert_eq!(r.anchor, Anchor::Due);
        let errors = problems(TaskFields::from_body(body(json!({
            "title": "t", "recurrence": {"rule": "FREQ=SOMETIMES"}
        }))));
        assert!(errors.contains_key("recurrence"));
    }

    #[test]
    fn patch_keeps_absent_fields_and_clears_nulls() {
        let current = fields(json!({
            "title": "t", "description": "d", "due_at": "2026-12-01T09:00:00Z",
            "reminder_minutes_before": 10, "tags": ["a"]
        }));
        let patch: TaskPatch =
            serde_json::from_value(json!({"description": null, "priority": "high"})).unwrap();
        let next = current.apply(patch).expect("valid patch");
        assert_eq!(next.description, None);
        assert_eq!(next.priority, Priority::High);
        assert_eq!(next.tags, vec!["a"]);
        assert_eq!(next.reminder_minutes_before, Some(10));

        let clear_due: TaskPatch = serde_json::from_value(json!({"due_at": null})).unwrap();
        let errors = problems(current.apply(clear_due));
        assert!(errors.contains_key("reminder_minutes_before"));

        let null_title: TaskPatch = serde_json::from_value(json!({"title": null})).unwrap();
        assert_eq!(
            problems(current.apply(null_title))["title"],
            "must not be null"
        );
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_body_types() {
        assert!(serde_json::from_value::<TaskBody>(json!({"title": "t", "colour": 1})).is_err());
        assert!(serde_json::from_value::<TaskPatch>(json!({"id": "x"})).is_err());
        assert!(serde_json::from_value::<TaskBody>(json!({"title": 5})).is_err());
    }

    #[test]
    fn integers_may_be_spelled_as_integral_numbers_as_json_schema_allows() {
        let b = body(json!({"title": "t", "reminder_minutes_before": 15.0}));
        assert_eq!(b.reminder_minutes_before, Some(15));
        let p: TaskPatch = serde_json::from_value(json!({"reminder_minutes_before": 7.0})).unwrap();
        assert_eq!(p.reminder_minutes_before, Some(Some(7)));
        for bad in [json!(1.5), json!(1e300), json!("5")] {
            assert!(
                serde_json::from_value::<TaskBody>(
                    json!({"title": "t", "reminder_minutes_before": bad})
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    /// The schema's "not blank" pattern accepts a value made of one character exactly when
    /// validation keeps it: not NUL, not whitespace to `trim`. The titles' schema says the same.
    #[test]
    fn the_not_blank_pattern_is_what_trimming_accepts() {
        use utoipa::PartialSchema;
        let pattern = regex::Regex::new(NOT_BLANK).unwrap();
        for c in (0..=0x3_1000).filter_map(char::from_u32) {
            let value = c.to_string().repeat(2);
            let kept = c != '\0' && !c.is_whitespace();
            assert_eq!(pattern.is_match(&value), kept, "U+{:04X}", u32::from(c));
            assert_eq!(title(&value).is_ok(), kept, "U+{:04X}", u32::from(c));
        }
        assert!(pattern.is_match(" a "));
        // Spelled out, not `\s`: schema readers disagree on what `\s` covers.
        assert!(!NOT_BLANK.contains(r"\s"));
        for schema in [TaskBody::schema(), TaskPatch::schema()] {
            let schema = serde_json::to_value(schema).unwrap();
            assert_eq!(
                schema["properties"]["title"]["pattern"], NOT_BLANK,
                "{schema}"
            );
        }
    }
}
