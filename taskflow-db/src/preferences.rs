//! Per-user notification preferences, stored as one JSON value per user in a [`KeyValueStore`].

use diesel_async::AsyncPgConnection;
use serde::{Deserialize, Serialize};

use crate::kv::{KeyValueStore, KvError, Versioned};

/// A delivery channel. `in_app` is the notification row itself and always on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    InApp,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    pub channels: Vec<Channel>,
    pub webhook_url: Option<String>,
    /// The HMAC key of webhook signatures; never returned by the API.
    pub webhook_secret: Option<String>,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            channels: vec![Channel::InApp],
            webhook_url: None,
            webhook_secret: None,
        }
    }
}

impl Preferences {
    /// The webhook's URL and secret when the channel is on and configured.
    pub fn webhook(&self) -> Option<(&str, &str)> {
        if !self.channels.contains(&Channel::Webhook) {
            return None;
        }
        Some((
            self.webhook_url.as_deref()?,
            self.webhook_secret.as_deref()?,
        ))
    }
}

fn key(user_id: &str) -> String {
    format!("preferences/{user_id}")
}

/// The user's preferences; the defaults (in-app only) when none were saved.
pub async fn load(store: &dyn KeyValueStore, user_id: &str) -> Result<Preferences, KvError> {
    Ok(load_versioned(store, user_id).await?.0)
}

/// [`load`] by a caller in a transaction on the shared database ([`KeyValueStore::get_on`]).
pub async fn load_on(
    store: &dyn KeyValueStore,
    conn: &mut AsyncPgConnection,
    user_id: &str,
) -> Result<Preferences, KvError> {
    Ok(parse(store.get_on(conn, &key(user_id)).await?, user_id).0)
}

/// The user's preferences and the ETag to save them back with (None: never saved).
pub async fn load_versioned(
    store: &dyn KeyValueStore,
    user_id: &str,
) -> Result<(Preferences, Option<String>), KvError> {
    Ok(parse(store.get(&key(user_id)).await?, user_id))
}

fn parse(stored: Option<Versioned>, user_id: &str) -> (Preferences, Option<String>) {
    match stored {
        // A value this code cannot read is treated as never saved rather than failing forever.
        Some(stored) => (
            serde_json::from_value(stored.value).unwrap_or_else(|e| {
                tracing::error!(user = user_id, error = %e, "stored preferences are unreadable");
                Preferences::default()
            }),
            Some(stored.etag),
        ),
        None => (Preferences::default(), None),
    }
}

/// Save the preferences if they still have `etag` (None: if none were saved); else
/// [`KvError::Conflict`].
pub async fn save(
    store: &dyn KeyValueStore,
    user_id: &str,
    preferences: &Preferences,
    etag: Option<&str>,
) -> Result<(), KvError> {
    let value = serde_json::to_value(preferences)
        .map_err(|e| KvError::Unavailable(format!("encoding preferences: {e}")))?;
    store.put(&key(user_id), &value, etag).await
}
