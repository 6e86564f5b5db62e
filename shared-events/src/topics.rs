//! Topic names, partition counts and consumer groups.

/// Every task change, keyed by series id.
pub const TASK_EVENTS: &str = "task-events";
/// Reminders that are due.
pub const REMINDERS: &str = "reminders";
/// Small "something changed" notices for live clients.
pub const TASK_UPDATES: &str = "task-updates";
pub const TASK_EVENTS_DLQ: &str = "task-events.dlq";
pub const REMINDERS_DLQ: &str = "reminders.dlq";

pub const RECURRENCE_WORKER_GROUP: &str = "recurrence-worker";
pub const NOTIFIER_GROUP: &str = "notifier";

/// A topic and the partition count it is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
}

/// The topics the system needs, with their default partition counts.
pub const TOPICS: [TopicSpec; 5] = [
    TopicSpec {
        name: TASK_EVENTS,
        partitions: 3,
    },
    TopicSpec {
        name: REMINDERS,
        partitions: 3,
    },
    TopicSpec {
        name: TASK_UPDATES,
        partitions: 1,
    },
    TopicSpec {
        name: TASK_EVENTS_DLQ,
        partitions: 1,
    },
    TopicSpec {
        name: REMINDERS_DLQ,
        partitions: 1,
    },
];

/// The topics the backend's outbox writes to.
pub const OUTBOX_TOPICS: [&str; 3] = [TASK_EVENTS, TASK_UPDATES, REMINDERS];

/// The dead-letter topic for a topic: `<topic>.dlq`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumed_topic_has_its_dead_letter_topic_in_the_list() {
        for consumed in [TASK_EVENTS, REMINDERS] {
            let dlq = dead_letter_topic(consumed);
            assert!(TOPICS.iter().any(|t| t.name == dlq), "{dlq} missing");
        }
        assert_eq!(dead_letter_topic("task-events"), TASK_EVENTS_DLQ);
        assert_eq!(
            TOPICS[0],
            TopicSpec {
                name: TASK_EVENTS,
                partitions: 3
            }
        );
    }
}
