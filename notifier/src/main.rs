use notifier::WebhookSettings;
use shared_events::topics::{NOTIFIER_GROUP, REMINDERS};
use taskflow_runtime::worker::{self, WorkerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = WorkerSettings::from_env(NOTIFIER_GROUP, &[REMINDERS], 9102)?;
    let webhook = WebhookSettings::from_env()?;
    let worker = settings.clone();
    worker::run("notifier", settings, move |pool, registry| {
        let (handler, runner) = notifier::build(pool, registry, &worker, &webhook)?;
        Ok((handler, Some(runner)))
    })
    .await
}
