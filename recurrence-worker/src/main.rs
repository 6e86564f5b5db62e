use recurrence_worker::RecurrenceHandler;
use shared_events::topics::{RECURRENCE_WORKER_GROUP, TASK_EVENTS};
use taskflow_runtime::worker::{self, WorkerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = WorkerSettings::from_env(RECURRENCE_WORKER_GROUP, &[TASK_EVENTS], 9101)?;
    worker::run("recurrence-worker", settings, |_, registry| {
        Ok((RecurrenceHandler::new(registry)?, None))
    })
    .await
}
