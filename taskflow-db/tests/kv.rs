//! Both key-value stores behind preferences pass the same behavioural tests: round trip, and
//! Dapr's first-write concurrency (a second first write, a stale or foreign ETag, and writers
//! racing over one read all lose with `Conflict`). The Dapr store runs against the test sidecar,
//! or a real one at `TASKFLOW_TEST_DAPR_ENDPOINT` with a state store named `taskflow-state`.

use diesel_async::{AsyncConnection, RunQueryDsl};
use serde_json::json;
use taskflow_db::kv::{DaprStateStore, KeyValueStore, KvError, PgKeyValueStore};
use taskflow_db::DbPool;
use taskflow_test_support::dapr::{contract_endpoint, TestSidecar};
use taskflow_test_support::db::fresh_database;
use taskflow_test_support::kafka::brokers;
use uuid::Uuid;

fn is_conflict(result: Result<(), KvError>) -> bool {
    matches!(result, Err(KvError::Conflict(_)))
}

async fn behaves_as_a_first_write_store(store: &dyn KeyValueStore, pool: &DbPool) {
    // A slash, as in the preferences' keys.
    let key = format!("test/{}", Uuid::now_v7());
    assert_eq!(store.get(&key).await.unwrap(), None);
    store.put(&key, &json!({"n": 1}), None).await.unwrap();
    let first = store.get(&key).await.unwrap().expect("stored");
    assert_eq!(first.value, json!({"n": 1}));
    assert!(
        is_conflict(store.put(&key, &json!({"n": 2}), None).await),
        "a second first write loses"
    );
    store
        .put(&key, &json!({"n": 3}), Some(&first.etag))
        .await
        .unwrap();
    let second = store.get(&key).await.unwrap().unwrap();
    assert_eq!(second.value, json!({"n": 3}));
    assert_ne!(second.etag, first.etag);
    assert!(is_conflict(
        store.put(&key, &json!({"n": 4}), Some(&first.etag)).await
    ));
    assert!(is_conflict(
        store.put(&key, &json!({"n": 5}), Some("not-an-etag")).await
    ));
    assert!(is_conflict(
        store
            .put(&format!("{key}-absent"), &json!({}), Some(&second.etag))
            .await
    ));
    assert_eq!(store.get(&key).await.unwrap().unwrap(), second);
    let racers = (0..6).map(|i| {
        let (key, etag) = (&key, &second.etag);
        async move { store.put(key, &json!({"racer": i}), Some(etag)).await }
    });
    let results = futures::future::join_all(racers).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results.into_iter().filter(|r| r.is_err()).all(is_conflict));
    // A caller with a connection of its own reads the same.
    let mut conn = pool.get().await.unwrap();
    assert_eq!(
        store.get_on(&mut conn, &key).await.unwrap(),
        store.get(&key).await.unwrap()
    );
    assert_eq!(store.get_on(&mut conn, "absent").await.unwrap(), None);
}

#[tokio::test]
async fn postgres_store() {
    let pool = taskflow_db::pool(&fresh_database().await, 8).unwrap();
    behaves_as_a_first_write_store(&PgKeyValueStore::new(pool.clone()), &pool).await;
}

#[tokio::test]
async fn the_postgres_store_reads_inside_the_callers_transaction() {
    let pool = taskflow_db::pool(&fresh_database().await, 4).unwrap();
    let store = PgKeyValueStore::new(pool.clone());
    let mut conn = pool.get().await.unwrap();
    let seen = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::sql_query("INSERT INTO kv_store (key, value) VALUES ('mine', '{\"n\": 1}')")
                .execute(conn)
                .await?;
            let on = store.get_on(conn, "mine").await.unwrap();
            let elsewhere = store.get("mine").await.unwrap();
            Ok((on, elsewhere))
        })
        .await
        .unwrap();
    assert_eq!(seen.0.map(|v| v.value), Some(json!({"n": 1})));
    assert_eq!(
        seen.1, None,
        "another connection cannot see the uncommitted row"
    );
}

#[tokio::test]
async fn dapr_state_store() {
    let sidecar = TestSidecar::start(&brokers(), "kafka-pubsub").await;
    sidecar.add_state_store("taskflow-state");
    let store = DaprStateStore::new(
        &contract_endpoint(&sidecar),
        "taskflow-state",
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let pool = taskflow_db::pool(&fresh_database().await, 2).unwrap();
    behaves_as_a_first_write_store(&store, &pool).await;
    // An unknown store is the sidecar refusing, not a missing value.
    let unknown =
        DaprStateStore::new(&sidecar.endpoint, "nope", std::time::Duration::from_secs(5)).unwrap();
    assert!(matches!(
        unknown.get("k").await,
        Err(KvError::Unavailable(_))
    ));
    sidecar.stop().await;
}
