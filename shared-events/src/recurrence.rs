// TEMPORARY STUB until the real module lands.
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Anchor {
    Due,
    Completion,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RecurrenceInput {
    Shorthand(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recurrence {
    pub rule: String,
    pub anchor: Anchor,
    pub active: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad")]
pub struct RecurrenceError;

impl Recurrence {
    pub fn parse(
        input: &RecurrenceInput,
        _due: Option<DateTime<Tz>>,
    ) -> Result<Recurrence, RecurrenceError> {
        let RecurrenceInput::Shorthand(s) = input;
        if s == "weekly" {
            Ok(Recurrence {
                rule: "FREQ=WEEKLY".into(),
                anchor: Anchor::Due,
                active: true,
            })
        } else {
            Err(RecurrenceError)
        }
    }
    pub fn next_due(
        &self,
        _a: DateTime<Utc>,
        _b: DateTime<Utc>,
        _c: DateTime<Utc>,
        _o: u32,
        _tz: Tz,
    ) -> Option<DateTime<Utc>> {
        None
    }
}
