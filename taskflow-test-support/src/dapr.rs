//! A test Dapr sidecar: Dapr's documented HTTP contract (`../shared/reference/dapr.md`) in front
//! of the real broker, since the sidecar itself cannot be installed here.
//! - publish: `POST /v1.0/publish/{pubsub}/{topic}` takes the app's own CloudEvent
//!   (`application/cloudevents+json`), adds Dapr's attributes, uses `metadata.partitionKey` as
//!   the Kafka key placed by Sarama's partitioner, other `metadata.X` as headers; 204/404/500.
//! - subscription delivery ([`TestSidecar::subscribe`]): reads the app's `GET /dapr/subscribe`,
//!   consumes each topic from the oldest offset and POSTs every CloudEvent to its route; a 2xx
//!   with SUCCESS (or no status) acknowledges, DROP dead-letters, RETRY, an unknown status or any
//!   non-2xx other than 404 retries (then dead-letters once the retries are used up), 404 drops.
//! - state: `POST /v1.0/state/{store}` (ETags, first-write and last-write; 204, 409 on a
//!   mismatch, 400 malformed) and `GET /v1.0/state/{store}/{key}` (200 + ETag, 204 absent).
//! - secrets: `GET /v1.0/secrets/{store}/{name}` (200 every key, 204 absent, 400 unknown store).
//! - `GET /v1.0/healthz/outbound` (204), and the cron binding ([`TestSidecar::trigger_binding`]):
//!   a POST to the route of the component in `dapr-components/`.
//!
//! Its state and secret stores are in memory: they are the sidecar's side, not the app's.
//! `TASKFLOW_TEST_DAPR_ENDPOINT` points the contract tests of the state API at a real sidecar
//! instead ([`contract_endpoint`]; README "Run with Dapr").

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::{self, Bytes, Data, Path, Query};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Message;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// A real sidecar for the state-API contract tests, when set.
pub const EXTERNAL_ENDPOINT: &str = "TASKFLOW_TEST_DAPR_ENDPOINT";

/// The endpoint the state-API contract tests talk to: `TASKFLOW_TEST_DAPR_ENDPOINT` (a real
/// `daprd` with a state store named like the test's) or this test sidecar.
pub fn contract_endpoint(sidecar: &TestSidecar) -> String {
    std::env::var(EXTERNAL_ENDPOINT)
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| sidecar.endpoint.clone())
}

/// Sarama's hash partitioner, which Dapr's Kafka component uses: FNV-1a 32-bit of the key,
/// as int32, modulo the partition count, negated when negative.
pub fn sarama_partition(key: &str, partitions: i32) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let p = (hash as i32) % partitions;
    if p < 0 {
        -p
    } else {
        p
    }
}

/// How the app answered one delivery attempt, as Dapr reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Success,
    Retry,
    Drop,
    /// HTTP 404: dropped without dead-lettering.
    NotFound,
    /// Any other status: retried.
    Status(u16),
    /// A 2xx with a status word Dapr does not know: retried.
    Unknown(String),
    /// The app could not be reached: retried.
    Unreachable,
}

/// One delivery attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub topic: String,
    /// The CloudEvent's `id` (empty when the payload has none).
    pub event_id: String,
    pub answer: Answer,
}

/// How deliveries behave; the defaults are quick versions of `resiliency.yaml`'s app retries.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    pub retry_interval: Duration,
    /// Retries after the first attempt before the message is dead-lettered.
    pub max_retries: u32,
    /// Deliver every message this many times (a redelivery after a restart or rebalance).
    pub deliveries_per_message: u32,
    /// Sent as `dapr-api-token` on every call to the app (`APP_API_TOKEN`).
    pub app_api_token: Option<String>,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            retry_interval: Duration::from_millis(100),
            max_retries: 10,
            deliveries_per_message: 1,
            app_api_token: None,
        }
    }
}

/// The app's `GET /dapr/subscribe` entries.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub pubsubname: String,
    pub topic: String,
    pub routes: Routes,
    pub dead_letter_topic: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Routes {
    pub default: String,
}

/// One secret's keys and values.
type SecretKeys = HashMap<String, String>;

struct Stored {
    value: Value,
    etag: String,
}

struct SidecarState {
    pubsub: String,
    brokers: String,
    producer: FutureProducer,
    /// Partition counts by topic, looked up once: a blocking metadata request per publish would
    /// stall the sidecar's workers under load and turn slow answers into timeouts.
    partitions: Mutex<HashMap<String, i32>>,
    failing: Arc<AtomicBool>,
    failing_key: Arc<Mutex<Option<String>>>,
    failing_event: Arc<Mutex<Option<String>>>,
    /// State stores that exist, and their items by (store, key).
    state_stores: Mutex<HashSet<String>>,
    state: Mutex<HashMap<(String, String), Stored>>,
    /// Secret stores: store -> secret name -> keys.
    secrets: Mutex<HashMap<String, HashMap<String, SecretKeys>>>,
    attempts: Mutex<Vec<Attempt>>,
    dead_letters: Mutex<Vec<Attempt>>,
}

/// A stand-in for the Dapr sidecar's HTTP API as documented, on a loopback port.
pub struct TestSidecar {
    pub endpoint: String,
    /// While set, publish and health answer 500 (a sidecar whose broker is away).
    pub failing: Arc<AtomicBool>,
    /// While set, publishes with this partition key answer 500 (one partition away).
    pub failing_key: Arc<Mutex<Option<String>>>,
    /// The publish of the CloudEvent with this id answers 500 once, which clears it.
    pub failing_event: Arc<Mutex<Option<String>>>,
    state: Data<SidecarState>,
    server: actix_web::dev::ServerHandle,
    deliveries: Vec<JoinHandle<()>>,
}

async fn outbound_health(state: Data<SidecarState>) -> HttpResponse {
    if state.failing.load(Ordering::SeqCst) {
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::NoContent().finish()
    }
}

fn dapr_error(status: u16, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"errorCode": code, "message": message.into()}))
}

async fn publish(
    state: Data<SidecarState>,
    path: Path<(String, String)>,
    query: Query<HashMap<String, String>>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let (pubsub, topic) = path.into_inner();
    if pubsub != state.pubsub {
        return dapr_error(
            404,
            "ERR_PUBSUB_NOT_FOUND",
            format!("pubsub {pubsub} not found"),
        );
    }
    let key = query.get("metadata.partitionKey").cloned();
    let key_fails = key.is_some() && *state.failing_key.lock().unwrap() == key;
    if state.failing.load(Ordering::SeqCst) || key_fails {
        return dapr_error(500, "ERR_PUBSUB_PUBLISH_MESSAGE", "broker unavailable");
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/cloudevents+json" {
        return HttpResponse::BadRequest().body("this test sidecar only takes CloudEvents");
    }
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(&body) else {
        return dapr_error(400, "ERR_PUBSUB_CLOUD_EVENTS_SER", "not a CloudEvent");
    };
    {
        let mut failing_event = state.failing_event.lock().unwrap();
        if failing_event.is_some()
            && event.get("id").and_then(Value::as_str) == failing_event.as_deref()
        {
            *failing_event = None;
            return dapr_error(500, "ERR_PUBSUB_PUBLISH_MESSAGE", "broker unavailable");
        }
    }
    // What Dapr adds to an app's own CloudEvent: its routing and tracing extension attributes.
    let traceparent = event
        .get("traceparent")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
    event.insert("topic".into(), Value::String(topic.clone()));
    event.insert("pubsubname".into(), Value::String(pubsub));
    event.insert("traceid".into(), Value::String(traceparent.clone()));
    event.insert("traceparent".into(), Value::String(traceparent));
    event.insert("tracestate".into(), Value::String(String::new()));
    let payload = serde_json::to_vec(&event).unwrap();
    let mut headers = OwnedHeaders::new();
    for (name, value) in query.iter() {
        if let Some(h) = name.strip_prefix("metadata.") {
            if h != "partitionKey" {
                headers = headers.insert(Header {
                    key: h,
                    value: Some(value.as_str()),
                });
            }
        }
    }
    let partitions = partition_count(&state, &topic).await;
    if partitions == 0 {
        return dapr_error(404, "ERR_TOPIC_NOT_FOUND", format!("topic {topic}"));
    }
    let mut record = FutureRecord::<str, [u8]>::to(&topic)
        .payload(&payload)
        .headers(headers);
    if let Some(key) = &key {
        record = record.key(key).partition(sarama_partition(key, partitions));
    }
    match state.producer.send(record, Duration::from_secs(5)).await {
        Ok(_) => HttpResponse::NoContent().finish(),
        Err((e, _)) => dapr_error(500, "ERR_PUBSUB_PUBLISH_MESSAGE", e.to_string()),
    }
}

/// The topic's partition count (0 when it does not exist), fetched off the worker thread.
async fn partition_count(state: &SidecarState, topic: &str) -> i32 {
    if let Some(n) = state.partitions.lock().unwrap().get(topic) {
        return *n;
    }
    let client = state.producer.clone();
    let name = topic.to_owned();
    let n = tokio::task::spawn_blocking(move || {
        client
            .client()
            .fetch_metadata(Some(&name), Duration::from_secs(5))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
            .unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    if n > 0 {
        state.partitions.lock().unwrap().insert(topic.to_owned(), n);
    }
    n
}

#[derive(Deserialize)]
struct StateItem {
    key: String,
    value: Value,
    etag: Option<String>,
    #[serde(default)]
    options: StateOptions,
}

#[derive(Deserialize, Default)]
struct StateOptions {
    concurrency: Option<String>,
}

async fn save_state(state: Data<SidecarState>, store: Path<String>, body: Bytes) -> HttpResponse {
    let store = store.into_inner();
    if !state.state_stores.lock().unwrap().contains(&store) {
        return dapr_error(
            400,
            "ERR_STATE_STORE_NOT_FOUND",
            format!("state store {store} is not found"),
        );
    }
    let items: Vec<StateItem> = match serde_json::from_slice(&body) {
        Ok(items) => items,
        Err(e) => return dapr_error(400, "ERR_MALFORMED_REQUEST", e.to_string()),
    };
    let mut stored = state.state.lock().unwrap();
    for item in items {
        let slot = (store.clone(), item.key.clone());
        let current = stored.get(&slot).map(|s| s.etag.as_str());
        let first_write = item.options.concurrency.as_deref() == Some("first-write");
        let allowed = match (&item.etag, current) {
            (Some(given), current) => current == Some(given.as_str()),
            (None, Some(_)) => !first_write,
            (None, None) => true,
        };
        if !allowed {
            return dapr_error(
                409,
                "ERR_STATE_SAVE",
                format!("possible etag mismatch for key {}", item.key),
            );
        }
        stored.insert(
            slot,
            Stored {
                value: item.value,
                etag: uuid::Uuid::now_v7().to_string(),
            },
        );
    }
    HttpResponse::NoContent().finish()
}

async fn get_state(state: Data<SidecarState>, path: Path<(String, String)>) -> HttpResponse {
    let (store, key) = path.into_inner();
    if !state.state_stores.lock().unwrap().contains(&store) {
        return dapr_error(
            400,
            "ERR_STATE_STORE_NOT_FOUND",
            format!("state store {store} is not found"),
        );
    }
    match state.state.lock().unwrap().get(&(store, key)) {
        None => HttpResponse::NoContent().finish(),
        Some(s) => HttpResponse::Ok()
            .insert_header(("ETag", s.etag.clone()))
            .json(&s.value),
    }
}

async fn get_secret(state: Data<SidecarState>, path: Path<(String, String)>) -> HttpResponse {
    let (store, name) = path.into_inner();
    let secrets = state.secrets.lock().unwrap();
    let Some(secrets) = secrets.get(&store) else {
        return dapr_error(
            400,
            "ERR_SECRET_STORES_NOT_CONFIGURED",
            format!("secret store {store} not found"),
        );
    };
    match secrets.get(&name) {
        None => HttpResponse::NoContent().finish(),
        Some(keys) => HttpResponse::Ok().json(keys),
    }
}

impl TestSidecar {
    pub async fn start(brokers: &str, pubsub: &str) -> TestSidecar {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .create()
            .expect("sidecar producer");
        let failing = Arc::new(AtomicBool::new(false));
        let failing_key = Arc::new(Mutex::new(None));
        let failing_event = Arc::new(Mutex::new(None));
        let state = Data::new(SidecarState {
            pubsub: pubsub.to_owned(),
            brokers: brokers.to_owned(),
            producer,
            partitions: Mutex::new(HashMap::new()),
            failing: failing.clone(),
            failing_key: failing_key.clone(),
            failing_event: failing_event.clone(),
            state_stores: Mutex::new(HashSet::new()),
            state: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
            attempts: Mutex::new(Vec::new()),
            dead_letters: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/v1.0/healthz/outbound", web::get().to(outbound_health))
                .route("/v1.0/publish/{pubsub}/{topic}", web::post().to(publish))
                .route("/v1.0/state/{store}", web::post().to(save_state))
                .route("/v1.0/state/{store}/{key}", web::get().to(get_state))
                .route("/v1.0/secrets/{store}/{name}", web::get().to(get_secret))
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind sidecar");
        let endpoint = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        TestSidecar {
            endpoint,
            failing,
            failing_key,
            failing_event,
            state,
            server: handle,
            deliveries: Vec::new(),
        }
    }

    /// A state store component named `store` (empty).
    pub fn add_state_store(&self, store: &str) {
        self.state
            .state_stores
            .lock()
            .unwrap()
            .insert(store.to_owned());
    }

    /// A secret `name` with `keys` in the secret store `store`.
    pub fn put_secret(&self, store: &str, name: &str, keys: &[(&str, &str)]) {
        self.state
            .secrets
            .lock()
            .unwrap()
            .entry(store.to_owned())
            .or_default()
            .insert(
                name.to_owned(),
                keys.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
    }

    /// Every delivery attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.attempts.lock().unwrap().clone()
    }

    /// The deliveries that went to a dead-letter topic (after DROP or the last retry).
    pub fn dead_letters(&self) -> Vec<Attempt> {
        self.state.dead_letters.lock().unwrap().clone()
    }

    /// Read the app's `GET /dapr/subscribe` (at `app`, e.g. `http://127.0.0.1:9102`) and start
    /// delivering each subscribed topic from its oldest offset, as Dapr does at start-up.
    pub async fn subscribe(&mut self, app: &str, options: DeliveryOptions) -> Vec<Subscription> {
        let client = reqwest::Client::new();
        let mut request = client.get(format!("{app}/dapr/subscribe"));
        if let Some(token) = &options.app_api_token {
            request = request.header("dapr-api-token", token);
        }
        let subscriptions: Vec<Subscription> = request
            .send()
            .await
            .expect("GET /dapr/subscribe")
            .json()
            .await
            .expect("/dapr/subscribe is JSON");
        for subscription in &subscriptions {
            if subscription.pubsubname != self.state.pubsub {
                continue;
            }
            let consumer = crate::kafka::reader(&self.state.brokers, &subscription.topic).await;
            self.deliveries.push(tokio::spawn(deliver_topic(
                self.state.clone(),
                client.clone(),
                format!("{app}{}", subscription.routes.default),
                subscription.clone(),
                options.clone(),
                consumer,
            )));
        }
        subscriptions
    }

    /// Fire the input binding `component` of `dapr-components/` as Dapr's cron binding does: a
    /// POST to its `route` metadata (else `/<component name>`) on the app. Returns the status.
    pub async fn trigger_binding(&self, app: &str, component: &str, token: Option<&str>) -> u16 {
        let route = binding_route(component);
        let mut request = reqwest::Client::new().post(format!("{app}{route}"));
        if let Some(token) = token {
            request = request.header("dapr-api-token", token);
        }
        request
            .send()
            .await
            .expect("binding call")
            .status()
            .as_u16()
    }

    pub async fn stop(self) {
        for delivery in &self.deliveries {
            delivery.abort();
        }
        self.server.stop(false).await;
    }
}

/// Every document of the YAML files directly in `dapr-components/`.
fn components() -> Vec<Value> {
    let dir = crate::workspace_root().join("dapr-components");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dapr-components/") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            docs.push(Value::deserialize(doc).unwrap());
        }
    }
    docs
}

/// The declarative subscriptions of `dapr-components/subscriptions.yaml` scoped to `app_id`, in
/// the programmatic form `GET /dapr/subscribe` answers with.
pub fn declared_subscriptions(app_id: &str) -> Vec<Value> {
    components()
        .into_iter()
        .filter(|doc| {
            doc["kind"] == "Subscription"
                && doc["scopes"]
                    .as_array()
                    .is_some_and(|s| s.contains(&json!(app_id)))
        })
        .map(|doc| {
            let spec = &doc["spec"];
            json!({
                "pubsubname": spec["pubsubname"],
                "topic": spec["topic"],
                "routes": spec["routes"],
                "deadLetterTopic": spec["deadLetterTopic"],
            })
        })
        .collect()
}

/// The route of the input binding named `component` in `dapr-components/`.
pub fn binding_route(component: &str) -> String {
    for doc in components() {
        let is_binding = doc["kind"] == "Component"
            && doc["spec"]["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("bindings."));
        if !is_binding || doc["metadata"]["name"] != component {
            continue;
        }
        let route = doc["spec"]["metadata"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == "route")
            .and_then(|m| m["value"].as_str());
        return route.map_or_else(|| format!("/{component}"), str::to_owned);
    }
    panic!("no binding component {component} in dapr-components/")
}

/// Deliver one topic's messages in order (Dapr's Kafka component blocks a partition while it
/// retries a message).
async fn deliver_topic(
    state: Data<SidecarState>,
    client: reqwest::Client,
    url: String,
    subscription: Subscription,
    options: DeliveryOptions,
    consumer: rdkafka::consumer::StreamConsumer,
) {
    // Tansu sometimes hands out an offset twice: that is the broker's repeat, not Dapr's.
    let mut seen = HashSet::new();
    loop {
        let Ok(message) = consumer.recv().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !seen.insert((message.partition(), message.offset())) {
            continue;
        }
        let payload = message.payload().unwrap_or_default().to_vec();
        let event_id = serde_json::from_slice::<Value>(&payload)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        for _ in 0..options.deliveries_per_message.max(1) {
            deliver_one(
                &state,
                &client,
                &url,
                &subscription,
                &options,
                &event_id,
                &payload,
            )
            .await;
        }
    }
}

async fn deliver_one(
    state: &SidecarState,
    client: &reqwest::Client,
    url: &str,
    subscription: &Subscription,
    options: &DeliveryOptions,
    event_id: &str,
    payload: &[u8],
) {
    for attempt in 0..=options.max_retries {
        if attempt > 0 {
            tokio::time::sleep(options.retry_interval).await;
        }
        let mut request = client
            .post(url)
            .header("content-type", "application/cloudevents+json")
            .body(payload.to_vec());
        if let Some(token) = &options.app_api_token {
            request = request.header("dapr-api-token", token);
        }
        let answer = match request.send().await {
            Err(_) => Answer::Unreachable,
            Ok(r) if r.status().as_u16() == 404 => Answer::NotFound,
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                match body["status"].as_str() {
                    None | Some("SUCCESS") => Answer::Success,
                    Some("RETRY") => Answer::Retry,
                    Some("DROP") => Answer::Drop,
                    Some(other) => Answer::Unknown(other.to_owned()),
                }
            }
            Ok(r) => Answer::Status(r.status().as_u16()),
        };
        let record = Attempt {
            topic: subscription.topic.clone(),
            event_id: event_id.to_owned(),
            answer: answer.clone(),
        };
        state.attempts.lock().unwrap().push(record.clone());
        match answer {
            Answer::Success | Answer::NotFound => return,
            Answer::Drop => return dead_letter(state, subscription, record, payload).await,
            _ if attempt == options.max_retries => {
                return dead_letter(state, subscription, record, payload).await
            }
            _ => {}
        }
    }
}

async fn dead_letter(
    state: &SidecarState,
    subscription: &Subscription,
    record: Attempt,
    payload: &[u8],
) {
    let Some(topic) = &subscription.dead_letter_topic else {
        return;
    };
    state
        .producer
        .send(
            FutureRecord::<str, [u8]>::to(topic).payload(payload),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("dead-letter publish");
    state.dead_letters.lock().unwrap().push(record);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sarama_placement_matches_the_observed_tansu_placement() {
        // kafka-outbox.md: fnv1a_random placed key0..key5 on 0,2,1,0,1,0 of a 3-partition topic.
        let placed: Vec<i32> = (0..6)
            .map(|i| sarama_partition(&format!("key{i}"), 3))
            .collect();
        assert_eq!(placed, vec![0, 2, 1, 0, 1, 0]);
    }

    #[test]
    fn the_cron_binding_posts_to_its_route() {
        assert_eq!(binding_route("reminder-scan"), "/internal/reminders/scan");
    }
}
