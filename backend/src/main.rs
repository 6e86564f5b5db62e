use std::time::Duration;

use anyhow::Context;
use backend::auth;
use backend::configuration::Settings;
use backend::startup::Application;
use taskflow_runtime::telemetry;

const USAGE: &str =
    "usage: backend [serve | migrate | topics | openapi | token USER_ID [TTL_SECONDS]]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if args == ["openapi"] {
        // Needs no configuration: the document is generated from the code.
        println!("{}", backend::openapi::document().to_pretty_json()?);
        return Ok(());
    }
    let settings = Settings::from_env(&Settings::secrets().await?)?;
    telemetry::init(settings.common.log_format);
    match args.as_slice() {
        [] | ["serve"] => serve(settings).await,
        ["migrate"] => {
            let pool = taskflow_db::pool(settings.common.database_url.expose(), 1)?;
            let applied = taskflow_db::migrations::migrate(&pool).await?;
            println!("{applied} migration(s) applied");
            Ok(())
        }
        ["topics"] => {
            let replication = std::env::var("KAFKA_REPLICATION_FACTOR")
                .ok()
                .map(|v| v.parse::<i32>())
                .transpose()
                .context("KAFKA_REPLICATION_FACTOR must be a whole number")?
                .unwrap_or(1);
            taskflow_kafka::admin::ensure_topics(
                &settings.common.kafka_brokers,
                &shared_events::topics::TOPICS,
                replication,
                &settings.common.topic_prefix,
            )
            .await?;
            println!("topics ready on {}", settings.common.kafka_brokers);
            Ok(())
        }
        ["token", user, rest @ ..] => {
            let ttl = match rest {
                [] => 24 * 3600,
                [secs] => secs.parse().context("TTL_SECONDS must be a whole number")?,
                _ => anyhow::bail!(USAGE),
            };
            let secret = settings
                .jwt_secret
                .as_ref()
                .context("JWT_SECRET is needed to mint a token")?;
            println!(
                "{}",
                auth::issue_token(secret.expose(), user, Duration::from_secs(ttl))?
            );
            Ok(())
        }
        _ => anyhow::bail!(USAGE),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(&settings).await?;
    tracing::info!(port = app.port(), "backend listening");
    app.run_until_stopped().await?;
    Ok(())
}
