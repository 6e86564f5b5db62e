//! The event path of the backend: the [`relay`] publishes the rows that `taskflow_db::outbox`
//! writes, and [`EventPathHealth`] says whether it can.

pub mod relay;

/// Whether the event path (relay to broker or sidecar) works, for `/ready` and logs.
#[derive(Debug, Default)]
pub struct EventPathHealth {
    problem: std::sync::Mutex<Option<String>>,
}

impl EventPathHealth {
    pub fn degraded(&self, reason: String) {
        if let Ok(mut p) = self.problem.lock() {
            *p = Some(reason);
        }
    }

    pub fn healthy(&self) {
        if let Ok(mut p) = self.problem.lock() {
            *p = None;
        }
    }

    /// The current problem, if any.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }
}
