//! Payloads handed from this process's writers to its relay, so that a claim need not read
//! them back: returning each row's `jsonb` as text (`escape_json`, then `send`) was a fifth of
//! the relay's PostgreSQL session. With the handoff that session fell from about 15 to 8 µs of
//! CPU a create (dev server, c=16 creates, `perf`; README "2026-12-06, late evening"). Only a
//! shortcut: a row whose payload is not here is read from `outbox`, so an entry missing,
//! dropped or never used costs a read, never an event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Bytes of payloads held at most: what the relay has not claimed yet (about 6,000 rows of the
/// bench's creates). Past it, writers stop offering and the relay reads the rest.
const MAX_BYTES: usize = 4 << 20;
/// An entry is dropped after one to two of these: one whose row never committed, or whose row
/// was claimed before its offer arrived, is never taken.
const GENERATION: Duration = Duration::from_secs(10);

/// A row's payload and trace context, as written.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub payload: String,
    pub traceparent: Option<String>,
}

/// Shared by the relay and every HTTP worker of this process.
#[derive(Debug)]
pub struct PayloadHandoff {
    /// Only while this process's relay holds the publishing lock: another replica's relay
    /// would never take the entries.
    publishing: AtomicBool,
    entries: Mutex<Generations>,
}

#[derive(Debug)]
struct Generations {
    current: HashMap<Uuid, Entry>,
    previous: HashMap<Uuid, Entry>,
    /// Payload bytes in `current` and in `previous`.
    bytes: [usize; 2],
    started: Instant,
}

impl Generations {
    fn new() -> Generations {
        Generations {
            current: HashMap::new(),
            previous: HashMap::new(),
            bytes: [0, 0],
            started: Instant::now(),
        }
    }

    fn rotate_if_due(&mut self) {
        if self.started.elapsed() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
            self.bytes = [0, self.bytes[0]];
            self.started = Instant::now();
        }
    }
}

impl Default for PayloadHandoff {
    fn default() -> Self {
        PayloadHandoff {
            publishing: AtomicBool::new(false),
            entries: Mutex::new(Generations::new()),
        }
    }
}

impl PayloadHandoff {
    fn lock(&self) -> MutexGuard<'_, Generations> {
        // Nothing panics while holding it; the maps stay consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entries of the claimed rows `ids`, in their order; None where none was offered.
    pub fn take(&self, ids: impl IntoIterator<Item = Uuid>) -> Vec<Option<Entry>> {
        let mut g = self.lock();
        ids.into_iter()
            .map(|id| {
                if let Some(e) = g.current.remove(&id) {
                    g.bytes[0] -= e.payload.len();
                    Some(e)
                } else if let Some(e) = g.previous.remove(&id) {
                    g.bytes[1] -= e.payload.len();
                    Some(e)
                } else {
                    None
                }
            })
            .collect()
    }

    /// Whether this process's relay publishes; when it stops (standby), the entries go.
    pub fn set_publishing(&self, publishing: bool) {
        if self.publishing.swap(publishing, Ordering::Relaxed) && !publishing {
            *self.lock() = Generations::new();
        }
    }
}

impl taskflow_db::outbox::Handoff for PayloadHandoff {
    fn offer(&self, id: Uuid, payload: &str, traceparent: Option<&str>) {
        if !self.publishing.load(Ordering::Relaxed) {
            return;
        }
        let mut g = self.lock();
        g.rotate_if_due();
        if g.bytes[0] + g.bytes[1] + payload.len() > MAX_BYTES {
            return;
        }
        g.bytes[0] += payload.len();
        let entry = Entry {
            payload: payload.to_owned(),
            traceparent: traceparent.map(str::to_owned),
        };
        if let Some(old) = g.current.insert(id, entry) {
            g.bytes[0] -= old.payload.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskflow_db::outbox::Handoff;

    fn entry(payload: &str) -> Option<Entry> {
        Some(Entry {
            payload: payload.to_owned(),
            traceparent: None,
        })
    }

    #[test]
    fn nothing_is_kept_unless_the_relay_publishes() {
        let h = PayloadHandoff::default();
        let id = Uuid::now_v7();
        h.offer(id, "{}", None);
        assert_eq!(h.take([id]), vec![None]);
        h.set_publishing(true);
        h.offer(id, "{}", Some("00-trace"));
        let taken = h.take([id, Uuid::now_v7()]);
        assert_eq!(
            taken,
            vec![
                Some(Entry {
                    payload: "{}".into(),
                    traceparent: Some("00-trace".into())
                }),
                None
            ]
        );
        assert_eq!(h.take([id]), vec![None], "an entry is taken once");
    }

    #[test]
    fn a_relay_on_standby_drops_what_it_held() {
        let h = PayloadHandoff::default();
        h.set_publishing(true);
        let id = Uuid::now_v7();
        h.offer(id, "{}", None);
        h.set_publishing(false);
        h.set_publishing(true);
        assert_eq!(h.take([id]), vec![None]);
    }

    #[test]
    fn offers_stop_at_the_budget_and_resume_as_entries_are_taken() {
        let h = PayloadHandoff::default();
        h.set_publishing(true);
        let big = "x".repeat(MAX_BYTES / 2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        h.offer(a, &big, None);
        h.offer(b, &big, None);
        h.offer(c, "{}", None);
        assert_eq!(h.take([c]), vec![None], "over the budget");
        assert_eq!(h.take([a]), vec![entry(&big)]);
        h.offer(c, "{}", None);
        assert_eq!(h.take([c, b]), vec![entry("{}"), entry(&big)]);
    }

    #[test]
    fn entries_older_than_two_generations_are_dropped() {
        let h = PayloadHandoff::default();
        h.set_publishing(true);
        let (old, newer, newest) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        h.offer(old, "old", None);
        h.lock().started -= GENERATION;
        h.offer(newer, "newer", None);
        h.lock().started -= GENERATION;
        h.offer(newest, "newest", None);
        assert_eq!(
            h.take([old, newer, newest]),
            vec![None, entry("newer"), entry("newest")]
        );
        assert_eq!(h.lock().bytes, [0, 0]);
    }
}
