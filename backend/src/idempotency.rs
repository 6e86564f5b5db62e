//! `Idempotency-Key` for task creation: the same key and body within 24 hours replays the first
//! response and creates nothing (draft-ietf-httpapi-idempotency-key-header).

use diesel::prelude::*;
use diesel::sql_types::{Bool, Bytea, Jsonb, SmallInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use taskflow_db::prepared::Prepare;
use taskflow_db::schema::idempotency_keys;

/// A validated key plus the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: Vec<u8>,
}

impl IdempotencyKey {
    /// `body` is the parsed JSON; hashing its canonical form ignores whitespace and key order.
    pub fn parse(header: &str, body: &serde_json::Value) -> Result<Self, ApiError> {
        let key = header.trim();
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::bad_request(
                "invalid_header",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(IdempotencyKey {
            key: key.to_owned(),
            request_hash: Sha256::digest(body.to_string().as_bytes()).to_vec(),
        })
    }
}

/// A response stored for replay.
#[derive(Debug, Clone, Queryable)]
pub struct Stored {
    pub request_hash: Vec<u8>,
    pub status: i16,
    pub body: serde_json::Value,
}

/// The live (under 24 hours old) response stored for this key, if any.
pub async fn find(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    key: &IdempotencyKey,
) -> QueryResult<Option<Stored>> {
    idempotency_keys::table
        .filter(idempotency_keys::user_id.eq(user_id))
        .filter(idempotency_keys::idempotency_key.eq(&key.key))
        .filter(diesel::dsl::sql::<Bool>(
            "created_at > now() - interval '24 hours'",
        ))
        .select((
            idempotency_keys::request_hash,
            idempotency_keys::response_status,
            idempotency_keys::response_body,
        ))
        .first(conn)
        .await
        .optional()
}

/// Replay a stored response, or refuse when the key came with another body.
pub fn replay(key: &IdempotencyKey, stored: Stored) -> Result<(u16, serde_json::Value), ApiError> {
    if stored.request_hash != key.request_hash {
        // A conflict with what the key already stands for, like any other stored state.
        return Err(ApiError::Conflict {
            code: "idempotency_key_reused",
            message: "the Idempotency-Key was already used with a different request body".into(),
        });
    }
    Ok((stored.status as u16, stored.body))
}

/// Remember the response. Returns false when a live entry for the key already exists (a
/// concurrent request got there first); an expired entry is overwritten.
pub async fn save(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    key: &IdempotencyKey,
    status: u16,
    body: &serde_json::Value,
) -> QueryResult<bool> {
    let written = diesel::sql_query(
        "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, response_status, response_body) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id, idempotency_key) DO UPDATE SET \
             request_hash = EXCLUDED.request_hash, response_status = EXCLUDED.response_status, \
             response_body = EXCLUDED.response_body, created_at = now() \
         WHERE idempotency_keys.created_at <= now() - interval '24 hours'",
    )
    .bind::<Text, _>(user_id)
    .bind::<Text, _>(&key.key)
    .bind::<Bytea, _>(&key.request_hash)
    .bind::<SmallInt, _>(status as i16)
    .bind::<Jsonb, _>(body)
    .prepared()
    .execute(conn)
    .await?;
    Ok(written == 1)
}

/// Forget keys older than 24 hours.
pub async fn prune(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM idempotency_keys WHERE created_at <= now() - interval '24 hours'",
    )
    .execute(conn)
    .await
}
