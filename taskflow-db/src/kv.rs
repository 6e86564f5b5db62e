//! A small key-value store for per-user settings: PostgreSQL natively (`kv_store`); a Dapr
//! state-store implementation plugs in behind the same trait.

use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::pool::DbPool;
use crate::schema::kv_store;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    #[error("key-value store: {0}")]
    Database(#[from] diesel::result::Error),
}

pub trait KeyValueStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, KvError>>;
    fn put<'a>(&'a self, key: &'a str, value: &'a Value) -> BoxFuture<'a, Result<(), KvError>>;
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
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, KvError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            Ok(kv_store::table
                .find(key)
                .select(kv_store::value)
                .first(&mut conn)
                .await
                .optional()?)
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a Value) -> BoxFuture<'a, Result<(), KvError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            diesel::insert_into(kv_store::table)
                .values((kv_store::key.eq(key), kv_store::value.eq(value)))
                .on_conflict(kv_store::key)
                .do_update()
                .set((
                    kv_store::value.eq(excluded(kv_store::value)),
                    kv_store::updated_at.eq(diesel::dsl::now),
                ))
                .execute(&mut conn)
                .await?;
            Ok(())
        })
    }
}
