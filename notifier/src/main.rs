use notifier::ReminderHandler;
use shared_events::topics::{NOTIFIER_GROUP, REMINDERS};
use shared_events::worker::{self, WorkerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = WorkerSettings::from_env(NOTIFIER_GROUP, &[REMINDERS], 8002)?;
    worker::run("notifier", settings, ReminderHandler::new).await
}
