//! The real `notifier` binary delivering reminder events (produced to prefixed topics on the test
//! broker) to a webhook receiver inside the test: signed, retried, recorded, dead-lettered,
//! refused for internal addresses, and never notified twice for one firing across a crash.

mod common;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use diesel::sql_types::{Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use taskflow_db::kv::PgKeyValueStore;
use taskflow_db::preferences::{self, Channel, Preferences};
use taskflow_db::DbPool;
use taskflow_test_support::db::{count, fresh_database};
use taskflow_test_support::eventually;
use taskflow_test_support::kafka::{brokers, prefixed_topics, producer, read, send};
use taskflow_test_support::process::Service;
use tokio::sync::Notify;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The receiver

#[derive(Debug, Clone)]
struct Received {
    path: String,
    idempotency_key: String,
    /// Signature and timestamp checked as the README tells receivers to.
    verified: bool,
}

#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<Received>>,
    /// Answers per path, in order; 200 once a path's script is used up.
    scripts: Mutex<HashMap<String, VecDeque<u16>>>,
    /// Told when `/hold` is first called; that call then answers only after 5 s.
    held: Notify,
}

fn secret_for(path: &str) -> String {
    format!("secret-of-{path}")
}

fn verify(secret: &str, req: &HttpRequest, body: &[u8]) -> bool {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let timestamp = header("X-TaskFlow-Timestamp");
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    header("X-TaskFlow-Signature") == format!("sha256={expected}")
}

async fn receive(req: HttpRequest, body: Bytes, state: Data<Receiver>) -> HttpResponse {
    let path = req.path().to_owned();
    let first_hold = {
        let mut received = state.received.lock().unwrap();
        let first = path == "/hold" && !received.iter().any(|r| r.path == "/hold");
        received.push(Received {
            path: path.clone(),
            idempotency_key: req
                .headers()
                .get("Idempotency-Key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            verified: verify(&secret_for(&path), &req, &body),
        });
        first
    };
    if first_hold {
        state.held.notify_one();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    if path == "/redirect" {
        return HttpResponse::Found()
            .insert_header(("Location", "http://169.254.169.254/latest/meta-data"))
            .finish();
    }
    let status = state
        .scripts
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

/// The receiver on a free loopback port; returns its state and port.
fn receiver(scripts: &[(&str, &[u16])]) -> (Data<Receiver>, u16) {
    let state = Data::new(Receiver::default());
    for (path, answers) in scripts {
        state
            .scripts
            .lock()
            .unwrap()
            .insert((*path).to_owned(), answers.iter().copied().collect());
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let shared = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .default_service(web::to(receive))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (state, port)
}

impl Receiver {
    fn on(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The notifier, its events and its records

struct Setup {
    url: String,
    pool: DbPool,
    brokers: String,
    prefix: String,
}

async fn setup() -> Setup {
    let brokers = brokers();
    let prefix = format!("notifier-{}.", Uuid::now_v7().simple());
    prefixed_topics(&brokers, &prefix).await;
    let url = fresh_database().await;
    let pool = taskflow_db::pool(&url, 2).unwrap();
    Setup {
        url,
        pool,
        brokers,
        prefix,
    }
}

impl Setup {
    fn start(&self, name: &str, allowed_hosts: &str) -> Service {
        Service::start(
            env!("CARGO_BIN_EXE_notifier"),
            name,
            &PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
            &[
                ("DATABASE_URL", &self.url),
                ("KAFKA_BROKERS", &self.brokers),
                ("KAFKA_TOPIC_PREFIX", &self.prefix),
                ("KAFKA_GROUP_ID", &format!("{}notifier", self.prefix)),
                ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
                ("KAFKA_ASSIGNMENT_STRATEGY", "range"),
                ("WEBHOOK_ALLOWED_HOSTS", allowed_hosts),
                ("WEBHOOK_MAX_ATTEMPTS", "3"),
                ("WEBHOOK_BACKOFF_MS", "100"),
                ("WEBHOOK_TIMEOUT_MS", "2000"),
            ],
        )
    }

    async fn webhook_user(&self, user: &str, url: &str, path: &str) {
        let store = PgKeyValueStore::new(self.pool.clone());
        let prefs = Preferences {
            channels: vec![Channel::InApp, Channel::Webhook],
            webhook_url: Some(url.to_owned()),
            webhook_secret: Some(secret_for(path)),
        };
        preferences::save(&store, user, &prefs, None).await.unwrap();
    }

    /// Produce one reminder firing for `user`; returns its event id.
    async fn fire(&self, user: &str) -> Uuid {
        let (id, key, payload) = common::reminder_firing(user);
        send(
            &producer(&self.brokers),
            &format!("{}reminders", self.prefix),
            &key,
            None,
            &payload,
        )
        .await;
        id
    }

    async fn delivery(&self, user: &str, channel: &str) -> Option<Delivery> {
        let mut conn = self.pool.get().await.unwrap();
        diesel::sql_query(
            "SELECT d.status, d.attempts, d.last_error, n.status AS overall, n.delivered_at::text \
             FROM notifications n JOIN notification_deliveries d ON d.notification_id = n.id \
             WHERE n.user_id = $1 AND d.channel = $2",
        )
        .bind::<Text, _>(user)
        .bind::<Text, _>(channel)
        .get_result(&mut conn)
        .await
        .ok()
    }

    /// Wait until `user`'s `channel` delivery is `status`.
    async fn settled(&self, user: &str, channel: &str, status: &str, log: &Service) -> Delivery {
        eventually(
            &format!("{user} {channel} {status}"),
            || log.log(),
            async || match self.delivery(user, channel).await {
                Some(d) if d.status == status => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
        self.delivery(user, channel).await.unwrap()
    }
}

#[derive(Debug, QueryableByName)]
struct Delivery {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Text)]
    overall: String,
    #[diesel(sql_type = Nullable<Text>)]
    delivered_at: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_recorded_and_dead_lettered() {
    let s = setup().await;
    let (rx, port) = receiver(&[("/flaky", &[500, 500]), ("/down", &[500; 10])]);
    let base = format!("http://127.0.0.1:{port}");
    s.webhook_user("flaky", &format!("{base}/flaky"), "/flaky")
        .await;
    s.webhook_user("down", &format!("{base}/down"), "/down")
        .await;
    s.webhook_user("later", &format!("{base}/later"), "/later")
        .await;
    s.webhook_user("redirected", &format!("{base}/redirect"), "/redirect")
        .await;
    let notifier = s.start("notifier-delivery", "127.0.0.1");
    notifier.wait_for("/ready", 200).await;

    // In-app only: delivered at once.
    s.fire("quiet").await;
    let in_app = s.settled("quiet", "in_app", "delivered", &notifier).await;
    assert_eq!(in_app.overall, "delivered");
    assert!(in_app.delivered_at.is_some());

    // 500, 500, then 200: delivered on the third attempt, with one idempotency key.
    s.fire("flaky").await;
    let flaky = s.settled("flaky", "webhook", "delivered", &notifier).await;
    assert_eq!(flaky.attempts, 3);
    assert_eq!(flaky.overall, "delivered");
    let calls = rx.on("/flaky");
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.verified), "{calls:?}");
    assert!(calls
        .iter()
        .all(|c| c.idempotency_key == calls[0].idempotency_key));

    // Always 500: failed after 3 attempts, dead-lettered; later reminders still go out.
    let down_event = s.fire("down").await;
    let down = s.settled("down", "webhook", "failed", &notifier).await;
    assert_eq!(down.attempts, 3);
    assert_eq!(down.overall, "failed");
    assert_eq!(down.last_error.as_deref(), Some("HTTP 500"));
    let dead = read(
        &s.brokers,
        &format!("{}reminders.dlq", s.prefix),
        1,
        Duration::from_secs(30),
        |_| true,
    )
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body["id"], down_event.to_string());
    assert!(dead[0]
        .headers
        .iter()
        .any(|(k, v)| k == "dlq_error" && v == "HTTP 500"));
    s.fire("later").await;
    s.settled("later", "webhook", "delivered", &notifier).await;

    // A redirect is not followed.
    s.fire("redirected").await;
    let redirected = s
        .settled("redirected", "webhook", "failed", &notifier)
        .await;
    assert!(
        redirected
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("redirect"),
        "{redirected:?}"
    );
    assert_eq!(rx.on("/redirect").len(), 1);

    let metrics = notifier
        .wait_for_metric("taskflow_notification_delivery_seconds")
        .await;
    assert!(
        metrics.contains("taskflow_notifications_delivered_total{channel=\"webhook\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("taskflow_notifications_failed_total{channel=\"webhook\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("taskflow_notification_retries_total{channel=\"webhook\"} 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_internal_addresses_are_refused_without_connecting() {
    let s = setup().await;
    let (rx, port) = receiver(&[]);
    let targets = [
        ("loopback-name", format!("http://localhost:{port}/x")),
        ("loopback-v6", format!("http://[::1]:{port}/x")),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data".to_owned(),
        ),
        ("private", "http://10.0.0.1/hook".to_owned()),
        ("loopback", format!("http://127.0.0.1:{port}/x")),
    ];
    for (user, url) in &targets {
        s.webhook_user(user, url, "/x").await;
    }
    // No allow-list: production's policy.
    let notifier = s.start("notifier-ssrf", "");
    notifier.wait_for("/ready", 200).await;
    for (user, _) in &targets {
        s.fire(user).await;
    }
    for (user, url) in &targets {
        let d = s.settled(user, "webhook", "failed", &notifier).await;
        let reason = d.last_error.unwrap_or_default();
        assert!(reason.starts_with("refused:"), "{url}: {reason}");
        assert_eq!(d.attempts, 1, "{url}: refused at once, no retries");
    }
    assert!(
        rx.received.lock().unwrap().is_empty(),
        "a connection was made"
    );
    assert_eq!(
        count(
            &s.pool,
            "SELECT count(*) AS n FROM notifications WHERE status = 'failed'"
        )
        .await,
        targets.len() as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_mid_delivery_notifies_once() {
    let s = setup().await;
    let (rx, port) = receiver(&[]);
    s.webhook_user("held", &format!("http://127.0.0.1:{port}/hold"), "/hold")
        .await;
    let mut first = s.start("notifier-killed", "127.0.0.1");
    first.wait_for("/ready", 200).await;
    let event = s.fire("held").await;
    // The webhook has the request; the delivery's transaction has not committed.
    tokio::time::timeout(Duration::from_secs(30), rx.held.notified())
        .await
        .unwrap_or_else(|_| panic!("no webhook call\n{}", first.log()));
    first.kill();
    let second = s.start("notifier-restarted", "127.0.0.1");
    let d = s.settled("held", "webhook", "delivered", &second).await;
    assert_eq!(d.overall, "delivered");
    assert_eq!(
        count(
            &s.pool,
            &format!("SELECT count(*) AS n FROM notifications WHERE event_id = '{event}'")
        )
        .await,
        1
    );
    let calls = rx.on("/hold");
    assert!(calls.len() >= 2, "{calls:?}");
    assert!(calls
        .iter()
        .all(|c| c.idempotency_key == calls[0].idempotency_key && c.verified));
}
