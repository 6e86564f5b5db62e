//! `SECRETS_SOURCE`: where the services' secrets (`DATABASE_URL`, `JWT_SECRET`) come from.
//! `env` (default): the environment. `dapr`: read once at start-up through the sidecar's secrets
//! API, `GET /v1.0/secrets/{DAPR_SECRET_STORE}/{DAPR_SECRET_NAME}`, whose answer holds every key
//! of the secret (on Kubernetes, the chart's Secret `taskflow-secrets`); a missing secret or key
//! stops the service with an error that names it.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{shared, var};

/// How long start-up waits for the sidecar to answer `/v1.0/healthz/outbound`.
const SIDECAR_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("SECRETS_SOURCE={0:?} is invalid: use env or dapr")]
    InvalidSource(String),
    #[error("SECRETS_SOURCE=dapr: the Dapr sidecar at {endpoint} is not ready: {reason}")]
    Sidecar { endpoint: String, reason: String },
    #[error("SECRETS_SOURCE=dapr: secret {name:?} not found in Dapr secret store {store:?}")]
    NotFound { store: String, name: String },
    #[error(
        "SECRETS_SOURCE=dapr: secret {name:?} in Dapr secret store {store:?} has no key {key}"
    )]
    MissingKey {
        store: String,
        name: String,
        key: String,
    },
    #[error("SECRETS_SOURCE=dapr: Dapr secret store {store:?} answered {status}: {body}")]
    Refused {
        store: String,
        status: u16,
        body: String,
    },
}

/// The secrets of this process: fetched from Dapr, or looked up in the environment.
#[derive(Debug, Default)]
pub struct Secrets {
    fetched: HashMap<String, String>,
}

impl Secrets {
    /// Resolve `SECRETS_SOURCE`; with `dapr`, every name in `required` must be a key of the
    /// secret.
    pub async fn load(required: &[&str]) -> Result<Secrets, SecretsError> {
        let source = shared("SECRETS_SOURCE");
        match source.as_str() {
            "env" => Ok(Secrets::default()),
            "dapr" => {
                let endpoint = shared("DAPR_HTTP_ENDPOINT");
                let store = shared("DAPR_SECRET_STORE");
                let name = shared("DAPR_SECRET_NAME");
                Secrets::from_dapr(&endpoint, &store, &name, required).await
            }
            _ => Err(SecretsError::InvalidSource(source)),
        }
    }

    /// Read secret `name` of `store` through the sidecar at `endpoint`.
    pub async fn from_dapr(
        endpoint: &str,
        store: &str,
        name: &str,
        required: &[&str],
    ) -> Result<Secrets, SecretsError> {
        let endpoint = endpoint.trim_end_matches('/');
        let sidecar = |reason: String| SecretsError::Sidecar {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| sidecar(e.to_string()))?;
        wait_for_sidecar(&client, endpoint).await.map_err(sidecar)?;
        let mut url = reqwest::Url::parse(endpoint).map_err(|e| sidecar(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| sidecar("not a base URL".into()))?
            .extend(["v1.0", "secrets", store, name]);
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|e| sidecar(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Err(SecretsError::NotFound {
                store: store.into(),
                name: name.into(),
            });
        }
        if !status.is_success() {
            return Err(SecretsError::Refused {
                store: store.into(),
                status: status.as_u16(),
                body,
            });
        }
        let fetched: HashMap<String, String> =
            serde_json::from_str(&body).map_err(|e| SecretsError::Refused {
                store: store.into(),
                status: status.as_u16(),
                body: format!("not a JSON object of strings: {e}"),
            })?;
        if let Some(key) = required.iter().find(|k| !fetched.contains_key(**k)) {
            return Err(SecretsError::MissingKey {
                store: store.into(),
                name: name.into(),
                key: (*key).to_owned(),
            });
        }
        tracing::info!(store, name, keys = fetched.len(), "secrets read from Dapr");
        Ok(Secrets { fetched })
    }

    /// The secret `name`: from Dapr when it was read from there, else the environment's.
    pub fn var(&self, name: &str) -> Option<String> {
        self.fetched
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
            .or_else(|| var(name))
    }
}

/// Poll the sidecar's outbound health (204) so start-up does not race the sidecar's own.
async fn wait_for_sidecar(client: &reqwest::Client, endpoint: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + SIDECAR_PATIENCE;
    loop {
        let last = match client
            .get(format!("{endpoint}/v1.0/healthz/outbound"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("outbound health answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{last} (waited {SIDECAR_PATIENCE:?})"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
