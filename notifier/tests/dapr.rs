//! The real `notifier` binary with `SUBSCRIBER=dapr` and `SECRETS_SOURCE=dapr` behind the test
//! sidecar, which reads its `/dapr/subscribe`, consumes the prefixed `reminders` from the broker
//! and pushes every CloudEvent to it, each one twice (a redelivery): every reminder is notified
//! exactly once, as with the Kafka consumer; garbage is DROPped to the dead-letter topic; while
//! the database is away the answer is RETRY, then SUCCESS.

mod common;

use std::path::PathBuf;

use serde_json::{json, Value};
use taskflow_test_support::dapr::{declared_subscriptions, Answer, DeliveryOptions, TestSidecar};
use taskflow_test_support::db::{count, fresh_database};
use taskflow_test_support::eventually;
use taskflow_test_support::kafka::{brokers, prefixed_topics, producer, read, send};
use taskflow_test_support::process::{metric, Service};
use taskflow_test_support::proxy::TcpProxy;
use uuid::Uuid;

const TOKEN: &str = "dapr-app-token";

struct Setup {
    brokers: String,
    prefix: String,
    sidecar: TestSidecar,
}

async fn setup(database_url: &str) -> Setup {
    let brokers = brokers();
    let prefix = format!("notifier-dapr-{}.", Uuid::now_v7().simple());
    prefixed_topics(&brokers, &prefix).await;
    let sidecar = TestSidecar::start(&brokers, "kafka-pubsub").await;
    sidecar.put_secret(
        "test-secrets",
        "taskflow-secrets",
        &[("DATABASE_URL", database_url)],
    );
    Setup {
        brokers,
        prefix,
        sidecar,
    }
}

impl Setup {
    fn start(&self, name: &str) -> Service {
        Service::start(
            env!("CARGO_BIN_EXE_notifier"),
            name,
            &PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
            &[
                ("SUBSCRIBER", "dapr"),
                ("SECRETS_SOURCE", "dapr"),
                ("DAPR_HTTP_ENDPOINT", &self.sidecar.endpoint),
                ("DAPR_SECRET_STORE", "test-secrets"),
                ("DAPR_SECRET_NAME", "taskflow-secrets"),
                // Never used: the secret store's value wins.
                (
                    "DATABASE_URL",
                    "postgres://nobody:wrong@127.0.0.1:1/nowhere",
                ),
                ("KAFKA_BROKERS", &self.brokers),
                ("KAFKA_TOPIC_PREFIX", &self.prefix),
                ("APP_API_TOKEN", TOKEN),
            ],
        )
    }

    /// Produce one reminder firing; returns its event id.
    async fn fire(&self, user: &str) -> Uuid {
        let (id, _, payload) = common::reminder_firing(user);
        self.send(&payload).await;
        id
    }

    async fn send(&self, payload: &[u8]) {
        send(
            &producer(&self.brokers),
            &format!("{}reminders", self.prefix),
            "k",
            None,
            payload,
        )
        .await;
    }

    fn options(&self) -> DeliveryOptions {
        DeliveryOptions {
            deliveries_per_message: 2,
            app_api_token: Some(TOKEN.into()),
            ..DeliveryOptions::default()
        }
    }
}

fn successes(sidecar: &TestSidecar, id: Uuid) -> usize {
    sidecar
        .attempts()
        .iter()
        .filter(|a| a.event_id == id.to_string() && a.answer == Answer::Success)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reminder_is_notified_once_under_redelivery() {
    let url = fresh_database().await;
    let mut s = setup(&url).await;
    let notifier = s.start("notifier-dapr");
    notifier.assert_healthy().await;
    let app = format!("http://{}", notifier.addr);

    // Its subscription is the declared one, on the deployment's (prefixed) topics.
    let options = s.options();
    let served = s.sidecar.subscribe(&app, options).await;
    assert_eq!(served.len(), 1);
    let served: Value = reqwest::Client::new()
        .get(format!("{app}/dapr/subscribe"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut declared = declared_subscriptions("notifier");
    for sub in &mut declared {
        for field in ["topic", "deadLetterTopic"] {
            sub[field] = json!(format!("{}{}", s.prefix, sub[field].as_str().unwrap()));
        }
    }
    assert_eq!(served, Value::Array(declared));

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.fire(&format!("user{i}")).await);
    }
    s.send(b"\xff not a CloudEvent").await;
    let pool = taskflow_db::pool(&url, 1).unwrap();
    eventually(
        "every reminder delivered twice and the garbage dead-lettered",
        || format!("{:?}\n{}", s.sidecar.attempts(), notifier.log()),
        async || {
            let done = ids.iter().all(|id| successes(&s.sidecar, *id) == 2)
                && s.sidecar.dead_letters().len() == 2;
            if done {
                Ok(())
            } else {
                Err("waiting".into())
            }
        },
    )
    .await;
    assert_eq!(
        count(&pool, "SELECT count(*) AS n FROM notifications").await,
        5
    );
    for id in &ids {
        let n = count(
            &pool,
            &format!(
                "SELECT count(*) AS n FROM notifications n JOIN notification_deliveries d \
                 ON d.notification_id = n.id WHERE n.event_id = '{id}' AND d.channel = 'in_app' \
                 AND d.status = 'delivered'"
            ),
        )
        .await;
        assert_eq!(n, 1, "event {id}");
    }
    // The same consumer name as the Kafka consumer's: switching modes handles nothing twice.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM processed_events WHERE consumer = 'notifier'"
        )
        .await,
        5
    );
    // Each delivery of the garbage is a DROP, which Dapr dead-letters.
    assert!(s
        .sidecar
        .dead_letters()
        .iter()
        .all(|a| a.answer == Answer::Drop));
    let dlq = read(
        &s.brokers,
        &format!("{}reminders.dlq", s.prefix),
        2,
        std::time::Duration::from_secs(10),
        |_| true,
    )
    .await;
    assert_eq!(dlq.len(), 2);
    assert_eq!(
        dlq[0].payload.as_deref(),
        Some(&b"\xff not a CloudEvent"[..])
    );
    for (outcome, n) in [("handled", 5.0), ("duplicate", 5.0), ("dead_lettered", 2.0)] {
        assert_eq!(
            metric(
                &notifier.addr,
                "taskflow_consumer_messages_total",
                &[("topic", "reminders"), ("outcome", outcome)]
            ),
            n,
            "{outcome}"
        );
    }

    // The route is internal: the app token is required, a user's token is refused.
    let client = reqwest::Client::new();
    let route = format!("{app}/api/events/reminders");
    let res = client.post(&route).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let res = client
        .post(&route)
        .header("dapr-api-token", TOKEN)
        .bearer_auth("a-user-token")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    s.sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_while_the_database_is_away_then_success() {
    let direct = fresh_database().await;
    let proxy = TcpProxy::start(TcpProxy::target_of(&direct)).await;
    let mut s = setup(&proxy.url_through(&direct)).await;
    let notifier = s.start("notifier-dapr-retry");
    notifier.assert_healthy().await;
    proxy.cut();
    let id = s.fire("rory").await;
    let options = DeliveryOptions {
        deliveries_per_message: 1,
        max_retries: 1000,
        ..s.options()
    };
    s.sidecar
        .subscribe(&format!("http://{}", notifier.addr), options)
        .await;
    eventually(
        "a RETRY while the database is away",
        || format!("{:?}\n{}", s.sidecar.attempts(), notifier.log()),
        async || {
            if s.sidecar
                .attempts()
                .iter()
                .any(|a| a.answer == Answer::Retry)
            {
                Ok(())
            } else {
                Err("no RETRY yet".into())
            }
        },
    )
    .await;
    assert_eq!(successes(&s.sidecar, id), 0);
    proxy.restore();
    eventually(
        "SUCCESS once the database is back",
        || format!("{:?}\n{}", s.sidecar.attempts(), notifier.log()),
        async || {
            if successes(&s.sidecar, id) == 1 {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;
    let pool = taskflow_db::pool(&direct, 1).unwrap();
    assert_eq!(
        count(
            &pool,
            &format!("SELECT count(*) AS n FROM notifications WHERE event_id = '{id}'")
        )
        .await,
        1
    );
    assert!(s.sidecar.dead_letters().is_empty());
    s.sidecar.stop().await;
}
