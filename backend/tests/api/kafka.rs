//! A test Dapr sidecar that speaks Dapr's publish contract and forwards to the broker, and
//! Sarama's (Dapr's) partitioner to compare placements with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::{self, Bytes, Data, Path, Query};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::Value;

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

/// A stand-in for the Dapr sidecar's HTTP API as documented (publish and outbound health),
/// forwarding to a real broker the way Dapr's Kafka component does.
pub struct TestSidecar {
    pub endpoint: String,
    /// While set, publish and health answer 500 (a sidecar whose broker is away).
    pub failing: Arc<AtomicBool>,
    /// While set, publishes with this partition key answer 500 (one partition away).
    pub failing_key: Arc<Mutex<Option<String>>>,
    server: actix_web::dev::ServerHandle,
}

struct SidecarState {
    pubsub: String,
    producer: FutureProducer,
    failing: Arc<AtomicBool>,
    failing_key: Arc<Mutex<Option<String>>>,
}

async fn outbound_health(state: Data<SidecarState>) -> HttpResponse {
    if state.failing.load(Ordering::SeqCst) {
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::NoContent().finish()
    }
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
        return HttpResponse::NotFound()
            .json(serde_json::json!({"errorCode": "ERR_PUBSUB_NOT_FOUND", "message": format!("pubsub {pubsub} not found")}));
    }
    let key = query.get("metadata.partitionKey").cloned();
    let key_fails = key.is_some() && *state.failing_key.lock().unwrap() == key;
    if state.failing.load(Ordering::SeqCst) || key_fails {
        return HttpResponse::InternalServerError()
            .json(serde_json::json!({"errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE", "message": "broker unavailable"}));
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
        return HttpResponse::BadRequest()
            .json(serde_json::json!({"errorCode": "ERR_PUBSUB_CLOUD_EVENTS_SER"}));
    };
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
    let partitions = match state
        .producer
        .client()
        .fetch_metadata(Some(&topic), Duration::from_secs(5))
    {
        Ok(m) => m
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0) as i32,
        Err(_) => 0,
    };
    if partitions == 0 {
        return HttpResponse::NotFound()
            .json(serde_json::json!({"errorCode": "ERR_TOPIC_NOT_FOUND"}));
    }
    let mut record = FutureRecord::<str, [u8]>::to(&topic)
        .payload(&payload)
        .headers(headers);
    if let Some(key) = &key {
        record = record.key(key).partition(sarama_partition(key, partitions));
    }
    match state.producer.send(record, Duration::from_secs(5)).await {
        Ok(_) => HttpResponse::NoContent().finish(),
        Err((e, _)) => HttpResponse::InternalServerError()
            .json(serde_json::json!({"errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE", "message": e.to_string()})),
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
        let state = Data::new(SidecarState {
            pubsub: pubsub.to_owned(),
            producer,
            failing: failing.clone(),
            failing_key: failing_key.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/v1.0/healthz/outbound", web::get().to(outbound_health))
                .route("/v1.0/publish/{pubsub}/{topic}", web::post().to(publish))
        })
        .workers(1)
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
            server: handle,
        }
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}

#[test]
fn sarama_placement_matches_the_observed_tansu_placement() {
    // kafka-outbox.md: fnv1a_random placed key0..key5 on 0,2,1,0,1,0 of a 3-partition topic.
    let placed: Vec<i32> = (0..6)
        .map(|i| sarama_partition(&format!("key{i}"), 3))
        .collect();
    assert_eq!(placed, vec![0, 2, 1, 0, 1, 0]);
}
