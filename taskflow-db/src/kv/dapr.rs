//! [`KeyValueStore`] over Dapr's state API: `GET /v1.0/state/{store}/{key}` (200 with the value
//! and an `ETag` header, 204 when absent) and `POST /v1.0/state/{store}` with
//! `options.concurrency: first-write` (204; 409 when the ETag no longer matches, or when the key
//! exists and no ETag was given).

use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{KeyValueStore, KvError, Versioned};

pub struct DaprStateStore {
    client: reqwest::Client,
    endpoint: String,
    store: String,
}

impl DaprStateStore {
    /// `endpoint`: the sidecar's HTTP address (`DAPR_HTTP_ENDPOINT`); `store`: the state store
    /// component (`DAPR_STATE_STORE`).
    pub fn new(endpoint: &str, store: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(DaprStateStore {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            store: store.to_owned(),
        })
    }
}

/// The key as Dapr stores it: only URL-unreserved characters, because the sidecar's GET route
/// cannot take a key with `/` in it (dapr/dapr#8746), even percent-encoded, while its POST
/// takes any. Every other byte becomes `~XX`, so the mapping stays one-to-one.
fn dapr_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(byte as char),
            other => out.push_str(&format!("~{other:02X}")),
        }
    }
    out
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(format!("dapr state: {e}"))
}

impl KeyValueStore for DaprStateStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, KvError>> {
        Box::pin(async move {
            let url = format!(
                "{}/v1.0/state/{}/{}",
                self.endpoint,
                self.store,
                dapr_key(key)
            );
            let response = self.client.get(url).send().await.map_err(unavailable)?;
            match response.status() {
                StatusCode::NO_CONTENT => Ok(None),
                StatusCode::OK => {
                    let etag = response
                        .headers()
                        .get(reqwest::header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .ok_or_else(|| unavailable("200 without an ETag header"))?;
                    let value = response.json().await.map_err(unavailable)?;
                    Ok(Some(Versioned { value, etag }))
                }
                status => Err(unavailable(format!(
                    "GET answered {status}: {}",
                    response.text().await.unwrap_or_default()
                ))),
            }
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a Value,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        Box::pin(async move {
            let mut item = json!({
                "key": dapr_key(key),
                "value": value,
                "options": {"concurrency": "first-write"},
            });
            if let Some(etag) = etag {
                item["etag"] = json!(etag);
            }
            let response = self
                .client
                .post(format!("{}/v1.0/state/{}", self.endpoint, self.store))
                .json(&[item])
                .send()
                .await
                .map_err(unavailable)?;
            match response.status() {
                s if s.is_success() => Ok(()),
                StatusCode::CONFLICT => Err(KvError::Conflict(key.to_owned())),
                // Dapr's answer to an ETag its store never issued (not a UUID for state.postgresql).
                StatusCode::BAD_REQUEST if etag.is_some() => Err(KvError::Conflict(key.to_owned())),
                status => Err(unavailable(format!(
                    "POST answered {status}: {}",
                    response.text().await.unwrap_or_default()
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::dapr_key;

    #[test]
    fn keys_become_url_safe_and_stay_distinct() {
        assert_eq!(dapr_key("preferences/alice"), "preferences~2Falice");
        assert_eq!(dapr_key("a~2Fb"), "a~7E2Fb");
        assert_ne!(dapr_key("a/b"), dapr_key("a~2Fb"));
        assert_eq!(dapr_key("plain-key_1.x"), "plain-key_1.x");
    }
}
