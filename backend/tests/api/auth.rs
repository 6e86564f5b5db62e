//! Bearer tokens: missing, malformed, badly signed, expired, unsigned, for another user; another
//! user's task ids; asymmetric keys from a JWKS URL.

use std::net::TcpListener;

use actix_web::{web, App, HttpResponse, HttpServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use crate::helpers::{
    error_body, fresh_database, settings, spawn_app, spawn_with, TestApp, SECRET,
};

const USER: &str = "alice";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hs_token(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, exp_in_secs: i64) -> Value {
    json!({"sub": sub, "exp": now() + exp_in_secs, "iat": now()})
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Every user-scoped endpoint, with a body where it takes one.
fn endpoints(user: &str, id: &str) -> Vec<(Method, String, Option<Value>)> {
    let base = format!("/api/{user}/tasks");
    vec![
        (Method::GET, base.clone(), None),
        (Method::POST, base.clone(), Some(json!({"title": "t"}))),
        (Method::GET, format!("{base}/{id}"), None),
        (
            Method::PATCH,
            format!("{base}/{id}"),
            Some(json!({"title": "x"})),
        ),
        (
            Method::PUT,
            format!("{base}/{id}"),
            Some(json!({"title": "x"})),
        ),
        (Method::DELETE, format!("{base}/{id}"), None),
        (Method::PATCH, format!("{base}/{id}/complete"), None),
        (Method::POST, format!("{base}/{id}/recurrence/cancel"), None),
    ]
}

fn request(app: &TestApp, method: &Method, path: &str, body: &Option<Value>) -> RequestBuilder {
    let req = app.anonymous(method.clone(), path);
    match body {
        Some(b) => req.json(b),
        None => req,
    }
}

/// 401 with `WWW-Authenticate: Bearer` and the JSON error body.
async fn assert_unauthorized(res: reqwest::Response, what: &str) -> Value {
    assert_eq!(res.status(), 401, "{what}");
    assert_eq!(
        res.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer"),
        "{what}"
    );
    let body = error_body(res, 401).await;
    assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
    body
}

async fn list_with(app: &TestApp, authorization: &str) -> reqwest::Response {
    app.anonymous(Method::GET, &format!("/api/{USER}/tasks"))
        .header(AUTHORIZATION, authorization)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn no_token_is_401_on_every_user_route() {
    let app = spawn_app().await;
    let task = app.create(USER, json!({"title": "t"})).await;
    let id = task["id"].as_str().unwrap();
    for (method, path, body) in endpoints(USER, id) {
        let res = request(&app, &method, &path, &body).send().await.unwrap();
        let body = assert_unauthorized(res, &format!("{method} {path}")).await;
        assert_eq!(body["error"]["message"], "missing bearer token");
    }
    // Nothing changed and no event beyond the create.
    assert_eq!(app.count("SELECT count(*) AS n FROM tasks").await, 1);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
    assert_eq!(
        app.count("SELECT version AS n FROM tasks").await,
        1,
        "the task was not touched"
    );
}

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let app = spawn_app().await;
    let good = crate::helpers::token(USER);
    for header in [
        format!("Basic {}", URL_SAFE_NO_PAD.encode("alice:pw")),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer    ".to_owned(),
        good.clone(),
        format!("Token {good}"),
        format!("Bearer{good}"),
        format!("Bearer {good} extra"),
        "Bearer a.b.c".to_owned(),
        "Bearer not-a-jwt".to_owned(),
        "Bearer ....".to_owned(),
        format!("Bearer {}", "x".repeat(4000)),
    ] {
        let res = list_with(&app, &header).await;
        assert_unauthorized(res, &header).await;
    }
    // A header value that is not visible ASCII.
    let res = app
        .anonymous(Method::GET, &format!("/api/{USER}/tasks"))
        .header(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let body = assert_unauthorized(res, "non-ASCII header").await;
    assert_eq!(body["error"]["message"], "malformed Authorization header");
    // The good token itself works, also with a lowercase scheme.
    assert_eq!(
        list_with(&app, &format!("Bearer {good}")).await.status(),
        200
    );
    assert_eq!(
        list_with(&app, &format!("bearer {good}")).await.status(),
        200
    );
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_401() {
    let app = spawn_app().await;
    let forged = hs_token(Algorithm::HS256, "not-the-secret", &claims(USER, 600));
    let body =
        assert_unauthorized(list_with(&app, &format!("Bearer {forged}")).await, "forged").await;
    assert_eq!(body["error"]["message"], "the token's signature is invalid");
    // A valid token with its signature swapped for another token's.
    let good = hs_token(Algorithm::HS256, SECRET, &claims(USER, 600));
    let other = hs_token(Algorithm::HS256, SECRET, &claims("bob", 600));
    let (head_payload, _) = good.rsplit_once('.').unwrap();
    let (_, other_sig) = other.rsplit_once('.').unwrap();
    let spliced = format!("{head_payload}.{other_sig}");
    assert_unauthorized(
        list_with(&app, &format!("Bearer {spliced}")).await,
        "spliced",
    )
    .await;
    // A payload changed after signing.
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let tampered = format!("{head}.{}.{sig}", b64(&claims("bob", 600)));
    assert_unauthorized(
        list_with(&app, &format!("Bearer {tampered}")).await,
        "tampered",
    )
    .await;
}

#[tokio::test]
async fn an_expired_token_is_401_beyond_the_leeway() {
    let app = spawn_app().await;
    let expired = hs_token(Algorithm::HS256, SECRET, &claims(USER, -120));
    let body = assert_unauthorized(
        list_with(&app, &format!("Bearer {expired}")).await,
        "expired",
    )
    .await;
    assert_eq!(body["error"]["message"], "the token has expired");
    let long_gone = hs_token(Algorithm::HS256, SECRET, &claims(USER, -86_400 * 365));
    assert_unauthorized(
        list_with(&app, &format!("Bearer {long_gone}")).await,
        "long gone",
    )
    .await;
    // Within the 30 s leeway for clock skew the token still counts.
    let just_expired = hs_token(Algorithm::HS256, SECRET, &claims(USER, -5));
    assert_eq!(
        list_with(&app, &format!("Bearer {just_expired}"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn unsigned_garbage_and_incomplete_tokens_are_401() {
    let app = spawn_app().await;
    let payload = b64(&claims(USER, 600));
    let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    let none_upper = format!("{}.{payload}.", b64(&json!({"alg": "NONE", "typ": "JWT"})));
    let unknown_alg = format!("{}.{payload}.c2ln", b64(&json!({"alg": "XS999"})));
    let no_header_alg = format!("{}.{payload}.c2ln", b64(&json!({"typ": "JWT"})));
    // Right secret, but HS512 is not an accepted algorithm; RS256 needs a JWKS, which is not set.
    let hs512 = hs_token(Algorithm::HS512, SECRET, &claims(USER, 600));
    let rs256_header = format!(
        "{}.{payload}.c2ln",
        b64(&json!({"alg": "RS256", "typ": "JWT", "kid": "k"}))
    );
    let no_sub = hs_token(Algorithm::HS256, SECRET, &json!({"exp": now() + 600}));
    let empty_sub = hs_token(Algorithm::HS256, SECRET, &claims("", 600));
    let no_exp = hs_token(Algorithm::HS256, SECRET, &json!({"sub": USER}));
    let string_exp = hs_token(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": USER, "exp": "never"}),
    );
    let numeric_sub = hs_token(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": 42, "exp": now() + 600}),
    );
    let array_claims = hs_token(Algorithm::HS256, SECRET, &json!([USER]));
    for (what, token) in [
        ("alg none", none),
        ("alg NONE", none_upper),
        ("unknown alg", unknown_alg),
        ("no alg", no_header_alg),
        ("HS512", hs512),
        ("RS256 without JWKS", rs256_header),
        ("no sub", no_sub),
        ("empty sub", empty_sub),
        ("no exp", no_exp),
        ("string exp", string_exp),
        ("numeric sub", numeric_sub),
        ("array claims", array_claims),
        ("garbage", "eyJ.eyJ.eyJ".to_owned()),
        ("binary", URL_SAFE_NO_PAD.encode([0u8, 159, 146, 150, 255])),
        (
            "two parts",
            format!("{}.{payload}", b64(&json!({"alg": "HS256"}))),
        ),
    ] {
        assert_unauthorized(list_with(&app, &format!("Bearer {token}")).await, what).await;
    }
}

#[tokio::test]
async fn a_token_for_another_user_is_403_and_changes_nothing() {
    let app = spawn_app().await;
    let task = app.create(USER, json!({"title": "mine"})).await;
    let id = task["id"].as_str().unwrap();
    for (method, path, body) in endpoints(USER, id) {
        let mut req = app.as_user("bob", method.clone(), &path);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let body = error_body(res, 403).await;
        assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
    }
    let fetched: Value = app.get_json(USER, &format!("/api/{USER}/tasks/{id}")).await;
    assert_eq!(fetched, task);
    assert_eq!(app.count("SELECT count(*) AS n FROM tasks").await, 1);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
}

#[tokio::test]
async fn another_users_task_id_is_404_like_a_missing_one() {
    let app = spawn_app().await;
    let bobs = app
        .create(
            "bob",
            json!({"title": "bob's", "due_at": "2026-12-01T09:00:00Z", "recurrence": "weekly"}),
        )
        .await;
    let bobs_id = bobs["id"].as_str().unwrap();
    let missing = uuid::Uuid::now_v7().to_string();
    for (method, path, body) in endpoints(USER, bobs_id).into_iter().skip(2) {
        let res = app
            .as_user(USER, method.clone(), &path)
            .json(&body.clone().unwrap_or(json!({})))
            .send()
            .await
            .unwrap();
        let leaked = error_body(res, 404).await;
        assert_eq!(leaked["error"]["code"], "not_found", "{method} {path}");
        // Exactly what a task id that does not exist gets: nothing tells the two apart.
        let res = app
            .as_user(USER, method.clone(), &path.replace(bobs_id, &missing))
            .json(&body.unwrap_or(json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(error_body(res, 404).await, leaked, "{method} {path}");
    }
    // Bob's task is untouched and only its create was recorded.
    let now: Value = app
        .get_json("bob", &format!("/api/bob/tasks/{bobs_id}"))
        .await;
    assert_eq!(now, bobs);
    assert_eq!(app.count("SELECT count(*) AS n FROM tasks").await, 1);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
}

/// An Ed25519 key pair for the JWKS tests: PKCS#8 DER of the private key and the raw public key
/// (base64url), made with `openssl genpkey -algorithm ed25519`. Test-only keys.
const ED_PRIVATE_PKCS8_HEX: &str = "302e020100300506032b657004220420f1cb1caac27e2dad53541f9969130535361e021737b4a91164f5aaa46f6c6765";
const ED_PUBLIC_X: &str = "1xcZDNJCVuLmtKPvbmmE2120EnCiqrb34qTDL4EMcbM";
/// A second private key, not in the JWKS.
const OTHER_ED_PRIVATE_PKCS8_HEX: &str = "302e020100300506032b65700422042094e7eca47339687e7e3b0971e14cd4e5d587df9a2d0c3df7f6c7ce4268ecc3e7";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ed_token(private_hex: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ed_der(&hex(private_hex)),
    )
    .unwrap()
}

/// A JWKS endpoint on a random port, as an identity provider would publish it.
fn serve_jwks(jwks: Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = jwks.to_string();
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/.well-known/jwks.json",
            web::get().to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}/.well-known/jwks.json")
}

#[tokio::test]
async fn eddsa_tokens_from_a_jwks_are_checked_by_key_id() {
    let url = serve_jwks(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "test-key", "alg": "EdDSA", "use": "sig", "x": ED_PUBLIC_X},
        // A malformed Ed25519 key (16 bytes instead of 32) must not break verification.
        {"kty": "OKP", "crv": "Ed25519", "kid": "short", "alg": "EdDSA", "x": URL_SAFE_NO_PAD.encode([7u8; 16])},
        // A symmetric key in the public set must never be usable.
        {"kty": "oct", "kid": "shared", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode("public-secret")},
    ]}));
    let mut config = settings(&fresh_database().await);
    config.jwt_jwks_url = Some(url);
    let app = spawn_with(config).await;
    let path = format!("/api/{USER}/tasks");

    let good = ed_token(ED_PRIVATE_PKCS8_HEX, Some("test-key"), &claims(USER, 600));
    assert_eq!(
        list_with(&app, &format!("Bearer {good}")).await.status(),
        200
    );
    let created = app
        .anonymous(Method::POST, &path)
        .bearer_auth(&good)
        .json(&json!({"title": "via jwks"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let unknown_kid = ed_token(
        ED_PRIVATE_PKCS8_HEX,
        Some("rotated-away"),
        &claims(USER, 600),
    );
    let body = assert_unauthorized(
        list_with(&app, &format!("Bearer {unknown_kid}")).await,
        "unknown kid",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rotated-away"),
        "{body}"
    );
    let short = ed_token(ED_PRIVATE_PKCS8_HEX, Some("short"), &claims(USER, 600));
    assert_unauthorized(
        list_with(&app, &format!("Bearer {short}")).await,
        "short key",
    )
    .await;
    // The server is still answering after that.
    assert_eq!(
        list_with(&app, &format!("Bearer {good}")).await.status(),
        200
    );
    let no_kid = ed_token(ED_PRIVATE_PKCS8_HEX, None, &claims(USER, 600));
    assert_unauthorized(list_with(&app, &format!("Bearer {no_kid}")).await, "no kid").await;
    let wrong_key = ed_token(
        OTHER_ED_PRIVATE_PKCS8_HEX,
        Some("test-key"),
        &claims(USER, 600),
    );
    assert_unauthorized(
        list_with(&app, &format!("Bearer {wrong_key}")).await,
        "wrong key",
    )
    .await;
    let expired = ed_token(ED_PRIVATE_PKCS8_HEX, Some("test-key"), &claims(USER, -120));
    assert_unauthorized(
        list_with(&app, &format!("Bearer {expired}")).await,
        "expired",
    )
    .await;
    // The oct key in the JWKS is ignored, whichever algorithm the token names.
    let mut header = Header::new(Algorithm::HS384);
    header.kid = Some("shared".into());
    let via_oct = jsonwebtoken::encode(
        &header,
        &claims(USER, 600),
        &EncodingKey::from_secret(b"public-secret"),
    )
    .unwrap();
    assert_unauthorized(
        list_with(&app, &format!("Bearer {via_oct}")).await,
        "oct key",
    )
    .await;
    let eddsa_naming_oct = ed_token(ED_PRIVATE_PKCS8_HEX, Some("shared"), &claims(USER, 600));
    assert_unauthorized(
        list_with(&app, &format!("Bearer {eddsa_naming_oct}")).await,
        "EdDSA naming the oct key",
    )
    .await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("shared".into());
    let hs256_oct = jsonwebtoken::encode(
        &header,
        &claims(USER, 600),
        &EncodingKey::from_secret(b"public-secret"),
    )
    .unwrap();
    assert_unauthorized(
        list_with(&app, &format!("Bearer {hs256_oct}")).await,
        "HS256 signed with the oct key",
    )
    .await;
    // A valid JWKS token for another user is still that user's.
    let bobs = ed_token(ED_PRIVATE_PKCS8_HEX, Some("test-key"), &claims("bob", 600));
    let res = list_with(&app, &format!("Bearer {bobs}")).await;
    assert_eq!(error_body(res, 403).await["error"]["code"], "forbidden");
    // HS256 with the shared secret keeps working next to the JWKS.
    assert_eq!(
        list_with(&app, &format!("Bearer {}", crate::helpers::token(USER)))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let mut config = settings(&fresh_database().await);
    config.jwt_issuer = Some("https://idp.example".into());
    config.jwt_audience = Some("taskflow".into());
    let app = spawn_with(config).await;
    let with = |extra: Value| {
        let mut c = claims(USER, 600);
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        format!("Bearer {}", hs_token(Algorithm::HS256, SECRET, &c))
    };
    let good = with(json!({"iss": "https://idp.example", "aud": "taskflow"}));
    assert_eq!(list_with(&app, &good).await.status(), 200);
    let many_audiences = with(json!({"iss": "https://idp.example", "aud": ["other", "taskflow"]}));
    assert_eq!(list_with(&app, &many_audiences).await.status(), 200);
    for (bad, says) in [
        (json!({"aud": "taskflow"}), "iss"),
        (
            json!({"iss": "https://evil.example", "aud": "taskflow"}),
            "issuer",
        ),
        (json!({"iss": "https://idp.example"}), "aud"),
        (
            json!({"iss": "https://idp.example", "aud": "other"}),
            "not meant for this service",
        ),
    ] {
        let res = list_with(&app, &with(bad.clone())).await;
        let body = error_body(res, 401).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{bad}: {message}");
    }
}

#[tokio::test]
async fn a_failing_identity_provider_is_asked_at_most_every_30_seconds() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let server = HttpServer::new(move || {
        let counted = counted.clone();
        App::new().route(
            "/jwks",
            web::get().to(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { HttpResponse::ServiceUnavailable().finish() }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    let mut config = settings(&fresh_database().await);
    config.jwt_jwks_url = Some(format!("http://127.0.0.1:{port}/jwks"));
    let app = spawn_with(config).await;
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "fetched once at start-up"
    );
    // Tokens naming unknown keys, many at once: none may trigger another fetch yet.
    let token = ed_token(ED_PRIVATE_PKCS8_HEX, Some("rotated"), &claims(USER, 600));
    let authorization = format!("Bearer {token}");
    let requests = (0..40).map(|_| list_with(&app, &authorization));
    for res in futures::future::join_all(requests).await {
        assert_eq!(error_body(res, 401).await["error"]["code"], "unauthorized");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_not_valid_yet_is_401() {
    let app = spawn_app().await;
    let mut early = claims(USER, 600);
    early["nbf"] = json!(now() + 300);
    let res = list_with(
        &app,
        &format!("Bearer {}", hs_token(Algorithm::HS256, SECRET, &early)),
    )
    .await;
    let body = error_body(res, 401).await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid yet"));
    // Within the leeway it is accepted.
    early["nbf"] = json!(now() + 5);
    let res = list_with(
        &app,
        &format!("Bearer {}", hs_token(Algorithm::HS256, SECRET, &early)),
    )
    .await;
    assert_eq!(res.status(), 200);
}
