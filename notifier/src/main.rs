use notifier::{WebhookSettings, DEFAULT_POOL_SIZE};
use shared_events::topics::{NOTIFIER_GROUP, REMINDERS};
use taskflow_runtime::config::var;
use taskflow_runtime::secrets::Secrets;
use taskflow_runtime::worker::{self, WorkerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secrets = Secrets::load(&["DATABASE_URL"]).await?;
    let mut settings = WorkerSettings::from_env(&secrets, NOTIFIER_GROUP, &[REMINDERS], 9102)?;
    if var("DB_POOL_SIZE").is_none() {
        settings.common.db_pool_size = DEFAULT_POOL_SIZE;
    }
    settings.push = notifier::push_settings()?;
    let webhook = WebhookSettings::from_env()?;
    let worker = settings.clone();
    worker::run("notifier", settings, move |pool, registry| {
        let (handler, runner) = notifier::build(pool, registry, &worker, &webhook)?;
        Ok((handler, Some(runner)))
    })
    .await
}
