use recurrence_worker::RecurrenceHandler;
use shared_events::topics::{RECURRENCE_WORKER_GROUP, TASK_EVENTS};
use shared_events::worker::{self, WorkerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = WorkerSettings::from_env(RECURRENCE_WORKER_GROUP, &[TASK_EVENTS], 8001)?;
    worker::run("recurrence-worker", settings, RecurrenceHandler::new).await
}
