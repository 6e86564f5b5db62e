//! Bearer-token authentication: HS256 with a shared secret and/or asymmetric keys from a JWKS URL.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use actix_web::web::Data;
use actix_web::{FromRequest, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{
    decode, decode_header, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::configuration::Settings;
use crate::error::ApiError;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// The JWKS is fetched again for an unknown key id at most this often.
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(30);
/// At most this many verified tokens are remembered ([`VerifiedTokens`]); about 1 MB.
const VERIFIED_TOKENS_MAX: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

pub struct Authenticator {
    hmac: Option<DecodingKey>,
    jwks: Option<RemoteKeys>,
    issuer: Option<String>,
    audience: Option<String>,
    verified: VerifiedTokens,
}

/// Tokens that passed [`Authenticator::verify`], by their exact text, so a client's next request
/// with the same token skips decoding it and checking its signature again: two JSON documents
/// parsed, a `Validation` built, an HMAC, 6.7 % of the HTTP workers' CPU in a create run (about
/// 4 µs a create; README, Performance, "2026-12-06, evening"). Whether a token is accepted
/// depends only on its text, the keys and the clock: an entry counts only until the token
/// expires and while the JWKS it was checked against is the current one. Failures are never
/// remembered; when full, the map is emptied.
#[derive(Default)]
struct VerifiedTokens(std::sync::Mutex<HashMap<Box<str>, Verified>>);

struct Verified {
    sub: String,
    exp: u64,
    /// [`RemoteKeys::generation`] when it was checked.
    keys: u64,
}

impl VerifiedTokens {
    /// The subject of `token` if it was verified against keys of generation `keys` and has not
    /// expired at `now` (seconds since the epoch; the same leeway as a full check).
    fn recall(&self, token: &str, now: u64, keys: u64) -> Option<String> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.get(token)?;
        if entry.keys == keys && now <= entry.exp.saturating_add(LEEWAY_SECS) {
            return Some(entry.sub.clone());
        }
        map.remove(token);
        None
    }

    fn remember(&self, token: &str, claims: &Claims, keys: u64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= VERIFIED_TOKENS_MAX {
            map.clear();
        }
        map.insert(
            token.into(),
            Verified {
                sub: claims.sub.clone(),
                exp: claims.exp,
                keys,
            },
        );
    }
}

struct RemoteKeys {
    url: String,
    client: reqwest::Client,
    keys: RwLock<JwkSet>,
    /// Bumped each time `keys` is replaced: tokens verified against an earlier set are checked
    /// again, so a key the identity provider dropped stops being accepted.
    generation: AtomicU64,
    /// When the JWKS was last asked for, whatever the answer; held during a fetch, so
    /// concurrent requests for unknown keys cause one fetch, not one each.
    last_attempt: Mutex<Option<Instant>>,
}

impl RemoteKeys {
    /// Fetch the JWKS, unless that was tried less than [`JWKS_REFRESH_MIN`] ago.
    async fn refresh(&self) {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|at| at.elapsed() < JWKS_REFRESH_MIN) {
            return;
        }
        *last = Some(Instant::now());
        let fetched = async {
            self.client
                .get(&self.url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        };
        match fetched.await {
            Ok(set) => self.replace(set).await,
            Err(e) => tracing::warn!(url = %self.url, error = %e, "fetching the JWKS failed"),
        }
    }

    async fn replace(&self, set: JwkSet) {
        *self.keys.write().await = set;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let lookup = |set: &JwkSet| {
            set.find(kid)
                .filter(|jwk| match &jwk.algorithm {
                    // Symmetric keys from a JWKS would let anyone holding the public set mint tokens.
                    AlgorithmParameters::OctetKey(_) => false,
                    // jsonwebtoken slices the first 32 bytes when verifying: a shorter `x` panics.
                    AlgorithmParameters::OctetKeyPair(okp) => URL_SAFE_NO_PAD
                        .decode(okp.x.trim_end_matches('='))
                        .is_ok_and(|x| x.len() == 32),
                    _ => true,
                })
                .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
        };
        if let Some(key) = lookup(&*self.keys.read().await) {
            return Some(key);
        }
        self.refresh().await;
        lookup(&*self.keys.read().await)
    }
}

impl Authenticator {
    /// Keys from the settings; the JWKS is fetched now, and again when a token names an unknown key.
    pub async fn from_settings(settings: &Settings) -> Self {
        let hmac = settings
            .jwt_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        let jwks = settings.jwt_jwks_url.as_ref().map(|url| RemoteKeys {
            url: url.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(JwkSet::default()),
            generation: AtomicU64::new(0),
            last_attempt: Mutex::new(None),
        });
        if let Some(remote) = &jwks {
            remote.refresh().await;
        }
        Authenticator {
            hmac,
            jwks,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            verified: VerifiedTokens::default(),
        }
    }

    /// The token's subject, or why it is not accepted.
    pub async fn verify(&self, token: &str) -> Result<String, ApiError> {
        // Read before the check, so a JWKS replaced during it leaves the entry already stale.
        let keys = self.keys_generation();
        if let Some(sub) = self
            .verified
            .recall(token, jsonwebtoken::get_current_timestamp(), keys)
        {
            return Ok(sub);
        }
        let claims = self.check(token).await?;
        self.verified.remember(token, &claims, keys);
        Ok(claims.sub)
    }

    fn keys_generation(&self) -> u64 {
        self.jwks
            .as_ref()
            .map_or(0, |remote| remote.generation.load(Ordering::SeqCst))
    }

    /// Decode `token` and check its signature and claims.
    async fn check(&self, token: &str) -> Result<Claims, ApiError> {
        let header = decode_header(token)
            .map_err(|_| ApiError::Unauthorized("the bearer token is not a valid JWT".into()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.clone().ok_or_else(|| {
                ApiError::Unauthorized("HS256 tokens are not accepted here".into())
            })?,
            Algorithm::HS384 | Algorithm::HS512 => {
                return Err(ApiError::Unauthorized(format!(
                    "algorithm {:?} is not accepted",
                    header.alg
                )))
            }
            _ => {
                let remote = self.jwks.as_ref().ok_or_else(|| {
                    ApiError::Unauthorized(format!("algorithm {:?} is not accepted", header.alg))
                })?;
                let kid = header.kid.as_deref().ok_or_else(|| {
                    ApiError::Unauthorized("the token has no key id (kid)".into())
                })?;
                remote
                    .key(kid)
                    .await
                    .ok_or_else(|| ApiError::Unauthorized(format!("unknown signing key {kid:?}")))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = decode::<Claims>(token, &key, &validation).map_err(|e| {
            ApiError::Unauthorized(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::InvalidSignature => "the token's signature is invalid".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
                ErrorKind::InvalidAudience => "the token is not meant for this service".to_owned(),
                _ => format!("the token is invalid: {e}"),
            })
        })?;
        if data.claims.sub.is_empty() {
            return Err(ApiError::Unauthorized(
                "the token's subject is empty".into(),
            ));
        }
        Ok(data.claims)
    }
}

/// Mint an HS256 token for `sub`, valid for `ttl` (used by `backend token` and tests).
pub fn issue_token(secret: &str, sub: &str, ttl: Duration) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let claims = Claims {
        sub: sub.to_owned(),
        exp: now + ttl.as_secs(),
        iat: Some(now),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// The user of a route under `/api/{user_id}`: authenticated, and the path's user. Every such
/// route takes this instead of checking the path itself, so none can forget to.
#[derive(Debug, Clone)]
pub struct PathUser(pub String);

impl FromRequest for PathUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let path_user = req.match_info().get("user_id").map(str::to_owned);
        let auth = AuthUser::from_request(req, payload);
        Box::pin(async move {
            let AuthUser(subject) = auth.await?;
            match path_user {
                Some(user) if user == subject => Ok(PathUser(user)),
                Some(_) => Err(ApiError::Forbidden),
                None => Err(ApiError::Internal(anyhow::anyhow!(
                    "PathUser on a route without {{user_id}}"
                ))),
            }
        })
    }
}

/// Defines the extractor of a resource's `{id}` path segment: one that is not a UUID names
/// nothing of that resource (404 with `$missing`).
macro_rules! path_id {
    ($(#[$doc:meta])* $name:ident, $missing:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name(pub uuid::Uuid);

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = std::future::Ready<Result<Self, Self::Error>>;

            fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
                std::future::ready(
                    req.match_info()
                        .get("id")
                        .and_then(|raw| uuid::Uuid::parse_str(raw).ok())
                        .map($name)
                        .ok_or(ApiError::NotFound($missing)),
                )
            }
        }
    };
}

path_id!(
    /// The `{id}` of a task route.
    TaskId,
    "no such task"
);
path_id!(
    /// The `{id}` of a reminder route.
    ReminderId,
    "no such reminder"
);
path_id!(
    /// The `{id}` of a notification route.
    NotificationId,
    "no such notification"
);

/// The authenticated caller: the `sub` of a valid bearer token.
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let auth = req.app_data::<Data<Authenticator>>().cloned();
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        Box::pin(async move {
            let auth =
                auth.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no authenticator")))?;
            let value = match header {
                None => return Err(ApiError::Unauthorized("missing bearer token".into())),
                Some(Err(_)) => {
                    return Err(ApiError::Unauthorized(
                        "malformed Authorization header".into(),
                    ))
                }
                Some(Ok(v)) => v,
            };
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized("expected 'Authorization: Bearer <token>'".into())
                })?;
            auth.verify(token).await.map(AuthUser)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-test-secret";

    fn authenticator(jwks: bool) -> Authenticator {
        Authenticator {
            hmac: Some(DecodingKey::from_secret(SECRET.as_bytes())),
            jwks: jwks.then(|| RemoteKeys {
                url: "http://127.0.0.1:1/jwks".into(),
                client: reqwest::Client::new(),
                keys: RwLock::new(JwkSet::default()),
                generation: AtomicU64::new(0),
                last_attempt: Mutex::new(None),
            }),
            issuer: None,
            audience: None,
            verified: VerifiedTokens::default(),
        }
    }

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            iat: None,
        }
    }

    fn remembered(auth: &Authenticator) -> usize {
        auth.verified.0.lock().unwrap().len()
    }

    #[test]
    fn a_verified_token_counts_until_it_expires_or_the_keys_change() {
        let tokens = VerifiedTokens::default();
        let exp = 1_000_000;
        tokens.remember("t", &claims("alice", exp), 0);
        assert_eq!(tokens.recall("t", exp, 0).as_deref(), Some("alice"));
        assert_eq!(
            tokens.recall("t", exp + LEEWAY_SECS, 0).as_deref(),
            Some("alice"),
            "the leeway of a full check"
        );
        assert_eq!(tokens.recall("t", exp + LEEWAY_SECS + 1, 0), None);
        assert_eq!(
            tokens.recall("t", exp, 0),
            None,
            "an expired entry is dropped"
        );
        tokens.remember("t", &claims("alice", exp), 0);
        assert_eq!(
            tokens.recall("t", exp, 1),
            None,
            "checked against other keys"
        );
        assert_eq!(tokens.recall("t", exp, 0), None);
        assert_eq!(tokens.recall("other", exp, 0), None);
    }

    #[test]
    fn the_remembered_tokens_are_bounded() {
        let tokens = VerifiedTokens::default();
        for i in 0..=VERIFIED_TOKENS_MAX {
            tokens.remember(&i.to_string(), &claims("alice", u64::MAX / 2), 0);
        }
        assert_eq!(tokens.0.lock().unwrap().len(), 1, "emptied when full");
        let last = VERIFIED_TOKENS_MAX.to_string();
        assert_eq!(tokens.recall(&last, 0, 0).as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn only_the_exact_text_of_a_verified_token_is_taken_on_trust() {
        let auth = authenticator(false);
        let token = issue_token(SECRET, "alice", Duration::from_secs(600)).unwrap();
        assert_eq!(auth.verify(&token).await.unwrap(), "alice");
        assert_eq!(remembered(&auth), 1);
        assert_eq!(auth.verify(&token).await.unwrap(), "alice");
        // The same claims under another signature.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut forged = signature.as_bytes().to_vec();
        forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{signed}.{}", String::from_utf8(forged).unwrap());
        let refused = auth.verify(&forged).await.unwrap_err();
        assert!(refused.to_string().contains("signature"), "{refused}");
        assert_eq!(remembered(&auth), 1, "a refused token is not remembered");
        let past = jsonwebtoken::get_current_timestamp() - 120;
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("alice", past),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        auth.verified
            .remember(&expired, &claims("mallory", past), 0);
        let refused = auth.verify(&expired).await.unwrap_err();
        assert!(refused.to_string().contains("expired"), "{refused}");
    }

    #[tokio::test]
    async fn a_new_key_set_makes_every_token_checked_again() {
        let auth = authenticator(true);
        let token = issue_token(SECRET, "alice", Duration::from_secs(600)).unwrap();
        // An entry that only the remembered tokens would answer, to see whether they do.
        let far = jsonwebtoken::get_current_timestamp() + 600;
        auth.verified.remember(&token, &claims("mallory", far), 0);
        assert_eq!(auth.verify(&token).await.unwrap(), "mallory");
        auth.jwks.as_ref().unwrap().replace(JwkSet::default()).await;
        assert_eq!(auth.verify(&token).await.unwrap(), "alice");
    }
}
