//! The CloudEvents 1.0 envelope (structured JSON mode) that both publishers put on Kafka.
//!
//! One hand-written struct rather than `cloudevents-sdk`: the structured mode is a single JSON
//! document, and the SDK's rdkafka binding forces a cmake build of librdkafka and its own
//! binary-mode headers, while we need byte-identical bodies from the Kafka and Dapr paths.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::task::TaskSnapshot;

pub const SPEC_VERSION: &str = "1.0";
pub const SOURCE: &str = "taskflow/backend";
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// The media type of a structured-mode CloudEvent.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// A CloudEvent in structured mode. `extensions` keeps attributes added on the way, such as
/// Dapr's `topic`, `pubsubname`, `traceid` and `tracestate`, so nothing is lost on decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<D = Value> {
    pub specversion: String,
    pub id: Uuid,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: D,
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEventType {
    Created,
    Updated,
    Completed,
    Deleted,
    RecurrenceCancelled,
}

impl TaskEventType {
    pub const ALL: [TaskEventType; 5] = [
        TaskEventType::Created,
        TaskEventType::Updated,
        TaskEventType::Completed,
        TaskEventType::Deleted,
        TaskEventType::RecurrenceCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskEventType::Created => "created",
            TaskEventType::Updated => "updated",
            TaskEventType::Completed => "completed",
            TaskEventType::Deleted => "deleted",
            TaskEventType::RecurrenceCancelled => "recurrence_cancelled",
        }
    }

    /// The CloudEvents `type`, e.g. `com.taskflow.task.completed`.
    pub fn cloudevent_type(self) -> &'static str {
        match self {
            TaskEventType::Created => "com.taskflow.task.created",
            TaskEventType::Updated => "com.taskflow.task.updated",
            TaskEventType::Completed => "com.taskflow.task.completed",
            TaskEventType::Deleted => "com.taskflow.task.deleted",
            TaskEventType::RecurrenceCancelled => "com.taskflow.task.recurrence_cancelled",
        }
    }

    pub fn from_cloudevent_type(t: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.cloudevent_type() == t)
    }
}

pub const REMINDER_DUE_TYPE: &str = "com.taskflow.reminder.due";
pub const TASK_CHANGED_TYPE: &str = "com.taskflow.task.changed";

/// The version of the task event payload this code writes and understands. Additions that old
/// readers can ignore keep it; anything else bumps it, and readers dead-letter newer versions
/// rather than misread them.
pub const TASK_EVENT_SCHEMA_VERSION: u32 = 1;

/// `data` of a task event on `task-events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub schema_version: u32,
    pub event_type: TaskEventType,
    pub task_id: Uuid,
    pub user_id: String,
    pub series_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub task: TaskSnapshot,
}

/// `data` of a reminder on `reminders`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReminderDue {
    pub reminder_id: Uuid,
    pub task_id: Uuid,
    pub user_id: String,
    pub title: String,
    pub due_at: DateTime<Utc>,
    pub remind_at: DateTime<Utc>,
}

/// `data` of the small notice on `task-updates` for live clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskChanged {
    pub event_type: TaskEventType,
    pub task_id: Uuid,
    pub user_id: String,
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
}

/// A decoded event `data`, chosen by the CloudEvents `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    Task(Box<TaskEvent>),
    Reminder(ReminderDue),
    Changed(TaskChanged),
}

/// Why a message could not be decoded; such messages go to the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message has no payload")]
    Empty,
    #[error("payload is not a CloudEvent: {0}")]
    Envelope(serde_json::Error),
    #[error("unsupported specversion {0:?}")]
    SpecVersion(String),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error(
        "schema_version {0} is newer than this reader understands ({TASK_EVENT_SCHEMA_VERSION})"
    )]
    SchemaVersion(u32),
    #[error("data does not match {event_type}: {source}")]
    Data {
        event_type: String,
        source: serde_json::Error,
    },
}

impl CloudEvent<Value> {
    /// Parse a structured-mode CloudEvent and its typed `data`.
    pub fn decode(payload: Option<&[u8]>) -> Result<(CloudEvent<Value>, EventData), DecodeError> {
        let bytes = payload
            .filter(|b| !b.is_empty())
            .ok_or(DecodeError::Empty)?;
        let mut event: CloudEvent<Value> =
            serde_json::from_slice(bytes).map_err(DecodeError::Envelope)?;
        if event.specversion != SPEC_VERSION {
            return Err(DecodeError::SpecVersion(event.specversion));
        }
        let data = std::mem::take(&mut event.data);
        let typed = |source| DecodeError::Data {
            event_type: event.event_type.clone(),
            source,
        };
        let decoded = if TaskEventType::from_cloudevent_type(&event.event_type).is_some() {
            let task = TaskEvent::deserialize(&data).map_err(typed)?;
            if task.schema_version > TASK_EVENT_SCHEMA_VERSION {
                return Err(DecodeError::SchemaVersion(task.schema_version));
            }
            EventData::Task(Box::new(task))
        } else if event.event_type == REMINDER_DUE_TYPE {
            EventData::Reminder(ReminderDue::deserialize(&data).map_err(typed)?)
        } else if event.event_type == TASK_CHANGED_TYPE {
            EventData::Changed(TaskChanged::deserialize(&data).map_err(typed)?)
        } else {
            return Err(DecodeError::UnknownType(event.event_type));
        };
        event.data = data;
        Ok((event, decoded))
    }
}

impl CloudEvent<TaskEvent> {
    /// The event for a change of `task` (its subject is the task, its data the whole snapshot).
    pub fn for_task(
        id: Uuid,
        event_type: TaskEventType,
        task: TaskSnapshot,
        time: DateTime<Utc>,
        traceparent: Option<String>,
    ) -> Self {
        CloudEvent::new(
            id,
            event_type.cloudevent_type(),
            task.id.to_string(),
            time,
            traceparent,
            TaskEvent {
                schema_version: TASK_EVENT_SCHEMA_VERSION,
                event_type,
                task_id: task.id,
                user_id: task.user_id.clone(),
                series_id: task.series_id,
                occurred_at: time,
                task,
            },
        )
    }
}

impl<D: Serialize> CloudEvent<D> {
    /// A new envelope with the fixed attributes filled in.
    pub fn new(
        id: Uuid,
        event_type: &str,
        subject: String,
        time: DateTime<Utc>,
        traceparent: Option<String>,
        data: D,
    ) -> Self {
        CloudEvent {
            specversion: SPEC_VERSION.to_owned(),
            id,
            source: SOURCE.to_owned(),
            event_type: event_type.to_owned(),
            subject,
            time,
            datacontenttype: DATA_CONTENT_TYPE.to_owned(),
            traceparent,
            data,
            extensions: Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task_event() -> CloudEvent<TaskEvent> {
        let now = "2026-12-01T09:00:00Z".parse().unwrap();
        let task = TaskSnapshot::new(Uuid::now_v7(), "alice", "t", now);
        CloudEvent::for_task(Uuid::now_v7(), TaskEventType::Completed, task, now, None)
    }

    #[test]
    fn every_task_event_type_maps_to_its_cloudevents_type_and_back() {
        for t in TaskEventType::ALL {
            let ce = t.cloudevent_type();
            assert_eq!(ce, format!("com.taskflow.task.{}", t.as_str()));
            assert_eq!(TaskEventType::from_cloudevent_type(ce), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert_eq!(TaskEventType::from_cloudevent_type(TASK_CHANGED_TYPE), None);
    }

    #[test]
    fn a_task_event_has_the_structured_envelope() {
        let event = task_event();
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["source"], "taskflow/backend");
        assert_eq!(value["type"], "com.taskflow.task.completed");
        assert_eq!(value["subject"], event.data.task_id.to_string());
        assert_eq!(value["datacontenttype"], "application/json");
        assert_eq!(value["time"], "2026-12-01T09:00:00Z");
        assert!(value.get("traceparent").is_none(), "absent, not null");
        assert_eq!(value["data"]["event_type"], "completed");
        assert_eq!(
            value["data"]["series_id"],
            value["data"]["task"]["series_id"]
        );
    }

    #[test]
    fn decode_round_trips_and_keeps_extension_attributes() {
        let event = task_event();
        let mut value = serde_json::to_value(&event).unwrap();
        value["pubsubname"] = json!("kafka-pubsub");
        value["topic"] = json!("task-events");
        let bytes = serde_json::to_vec(&value).unwrap();
        let (decoded, data) = CloudEvent::decode(Some(&bytes)).unwrap();
        assert_eq!(decoded.id, event.id);
        assert_eq!(decoded.extensions["pubsubname"], "kafka-pubsub");
        assert_eq!(serde_json::to_value(&decoded).unwrap(), value);
        match data {
            EventData::Task(task) => assert_eq!(*task, event.data),
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn reminders_and_change_notices_decode_by_type() {
        let now: DateTime<Utc> = "2026-12-01T09:00:00Z".parse().unwrap();
        let reminder = ReminderDue {
            reminder_id: Uuid::now_v7(),
            task_id: Uuid::now_v7(),
            user_id: "alice".into(),
            title: "t".into(),
            due_at: now,
            remind_at: now,
        };
        let ce = CloudEvent::new(
            Uuid::now_v7(),
            REMINDER_DUE_TYPE,
            "s".into(),
            now,
            None,
            &reminder,
        );
        let (_, data) = CloudEvent::decode(Some(&serde_json::to_vec(&ce).unwrap())).unwrap();
        assert_eq!(data, EventData::Reminder(reminder));
        let notice = TaskChanged {
            event_type: TaskEventType::Updated,
            task_id: Uuid::now_v7(),
            user_id: "alice".into(),
            version: 3,
            occurred_at: now,
        };
        let ce = CloudEvent::new(
            Uuid::now_v7(),
            TASK_CHANGED_TYPE,
            "s".into(),
            now,
            None,
            &notice,
        );
        let (_, data) = CloudEvent::decode(Some(&serde_json::to_vec(&ce).unwrap())).unwrap();
        assert_eq!(data, EventData::Changed(notice));
    }

    #[test]
    fn undecodable_payloads_say_why() {
        let good = serde_json::to_value(task_event()).unwrap();
        let with = |key: &str, v: Value| {
            let mut e = good.clone();
            e[key] = v;
            serde_json::to_vec(&e).unwrap()
        };
        let cases: Vec<(Option<Vec<u8>>, &str)> = vec![
            (None, "no payload"),
            (Some(vec![]), "no payload"),
            (Some(b"\xff\x00garbage".to_vec()), "not a CloudEvent"),
            (Some(b"{\"hello\": 1}".to_vec()), "not a CloudEvent"),
            (Some(with("specversion", json!("0.3"))), "specversion"),
            (
                Some(with("type", json!("com.example.other"))),
                "unknown event type",
            ),
            (
                Some(with("data", json!({"task_id": 5}))),
                "data does not match",
            ),
            (Some(with("id", json!("not-a-uuid"))), "not a CloudEvent"),
        ];
        for (payload, expected) in cases {
            let err = CloudEvent::decode(payload.as_deref())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
