//! A small key-value store for per-user settings, with Dapr's first-write concurrency: every
//! value has an ETag, and a write names the ETag it read (or none, for a key it found absent);
//! a write that lost a race fails with [`KvError::Conflict`]. Two implementations pass the same
//! tests (`tests/kv.rs`): PostgreSQL's `kv_store` (the ETag is a version counter) and Dapr's
//! state API ([`DaprStateStore`], `STATE_STORE=dapr`).

mod dapr;

use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde_json::Value;

pub use self::dapr::DaprStateStore;
use crate::pool::DbPool;
use crate::schema::kv_store;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// The key changed (or appeared) since it was read.
    #[error("{0} was changed by another write; read it again")]
    Conflict(String),
    #[error("key-value store: {0}")]
    Database(#[from] diesel::result::Error),
}

/// A stored value and its ETag (opaque; compare it, never parse it).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub value: Value,
    pub etag: String,
}

pub trait KeyValueStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, KvError>>;

    /// [`KeyValueStore::get`] for a caller holding a connection to the shared database: a store
    /// in that database reads on it (inside the caller's transaction, no second connection);
    /// any other store ignores it.
    fn get_on<'a>(
        &'a self,
        _conn: &'a mut AsyncPgConnection,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Versioned>, KvError>> {
        self.get(key)
    }

    /// Write `value` if the key still has `etag`, or, with `None`, if it does not exist yet.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a Value,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), KvError>>;
}

/// The store in the shared database.
pub struct PgKeyValueStore {
    pool: DbPool,
}

impl PgKeyValueStore {
    pub fn new(pool: DbPool) -> Self {
        PgKeyValueStore { pool }
    }

    async fn conn(&self) -> Result<Object<AsyncPgConnection>, KvError> {
        self.pool
            .get()
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))
    }
}

impl KeyValueStore for PgKeyValueStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, KvError>> {
        Box::pin(async move { read(&mut *self.conn().await?, key).await })
    }

    fn get_on<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Versioned>, KvError>> {
        Box::pin(read(conn, key))
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a Value,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let written = match etag {
                None => {
                    diesel::insert_into(kv_store::table)
                        .values((kv_store::key.eq(key), kv_store::value.eq(value)))
                        .on_conflict_do_nothing()
                        .execute(&mut conn)
                        .await?
                }
                // An ETag this store never issued matches nothing.
                Some(etag) => match etag.parse::<i64>() {
                    Err(_) => 0,
                    Ok(version) => {
                        diesel::update(
                            kv_store::table
                                .find(key)
                                .filter(kv_store::version.eq(version)),
                        )
                        .set((
                            kv_store::value.eq(value),
                            kv_store::version.eq(kv_store::version + 1),
                            kv_store::updated_at.eq(diesel::dsl::now),
                        ))
                        .execute(&mut conn)
                        .await?
                    }
                },
            };
            if written == 0 {
                return Err(KvError::Conflict(key.to_owned()));
            }
            Ok(())
        })
    }
}

async fn read(conn: &mut AsyncPgConnection, key: &str) -> Result<Option<Versioned>, KvError> {
    let row: Option<(Value, i64)> = kv_store::table
        .find(key)
        .select((kv_store::value, kv_store::version))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(|(value, version)| Versioned {
        value,
        etag: version.to_string(),
    }))
}
