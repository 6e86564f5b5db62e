use notifier::ReminderHandler;
use shared_events::topics::{NOTIFIER_GROUP, REMINDERS};
use taskflow_runtime::worker::{self, WorkerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = WorkerSettings::from_env(NOTIFIER_GROUP, &[REMINDERS], 9102)?;
    worker::run("notifier", settings, |_, _| Ok(ReminderHandler)).await
}
