use recurrence_worker::RecurrenceHandler;
use shared_events::topics::{RECURRENCE_WORKER_GROUP, TASK_EVENTS};
use taskflow_runtime::secrets::Secrets;
use taskflow_runtime::worker::{self, WorkerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secrets = Secrets::load(&["DATABASE_URL"]).await?;
    // Always its own consumer group, never Dapr's push: per-series order and partition scaling.
    let settings =
        WorkerSettings::from_env(&secrets, RECURRENCE_WORKER_GROUP, &[TASK_EVENTS], 9101)?;
    worker::run("recurrence-worker", settings, |_, registry| {
        Ok((RecurrenceHandler::new(registry)?, None))
    })
    .await
}
