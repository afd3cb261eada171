//! Malformed requests get their 4xx with `{error, message}`, store nothing, and the
//! service stays up; authentication is checked before anything else.

use crate::common;

use common::{call, client, local_target, NatsServer, Weft};
use serde_json::{json, Value};

async fn event_count(http: &reqwest::Client, weft: &Weft, token: Option<&str>) -> u64 {
    let mut req = http.get(weft.url("/api/state"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let (status, state) = call(req).await;
    assert_eq!(status, 200, "{state}");
    state["sequence"].as_u64().expect("sequence")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_change_nothing() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("WEFT_MAX_BODY_BYTES", "65536".into()),
    ]);
    let http = client();
    let (status, _) = call(
        http.post(weft.url("/api/targets"))
            .json(&local_target("existing")),
    )
    .await;
    assert_eq!(status, 201);
    let before = event_count(&http, &weft, None).await;

    let with = |patch: Value| {
        let mut t = local_target("new-one");
        if let (Some(t), Value::Object(p)) = (t.as_object_mut(), patch) {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    t.insert(k, v);
                }
            }
        }
        t.to_string()
    };
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(100_000));
    let post = "/api/targets";
    // (what, method, path, content type, body, expected status)
    let cases: Vec<(&str, &str, &str, &str, String, u16)> = vec![
        (
            "not JSON",
            "POST",
            post,
            "application/json",
            "{nope".into(),
            400,
        ),
        (
            "JSON array",
            "POST",
            post,
            "application/json",
            "[1,2]".into(),
            400,
        ),
        (
            "empty body",
            "POST",
            post,
            "application/json",
            String::new(),
            400,
        ),
        (
            "missing name",
            "POST",
            post,
            "application/json",
            with(json!({"name": null})),
            400,
        ),
        (
            "name of wrong type",
            "POST",
            post,
            "application/json",
            with(json!({"name": 5})),
            400,
        ),
        (
            "blank name",
            "POST",
            post,
            "application/json",
            with(json!({"name": "   "})),
            400,
        ),
        (
            "unknown field",
            "POST",
            post,
            "application/json",
            with(json!({"colour": "red"})),
            400,
        ),
        (
            "no capabilities",
            "POST",
            post,
            "application/json",
            with(json!({"capabilities": []})),
            400,
        ),
        (
            "capabilities not a list",
            "POST",
            post,
            "application/json",
            with(json!({"capabilities": "rust"})),
            400,
        ),
        (
            "blank boundary",
            "POST",
            post,
            "application/json",
            with(json!({"boundaries": ["personal", ""]})),
            400,
        ),
        (
            "bad agent type",
            "POST",
            post,
            "application/json",
            with(json!({"agentType": "Claude Code!"})),
            400,
        ),
        (
            "unknown mechanism",
            "POST",
            post,
            "application/json",
            with(json!({"mechanism": "carrier-pigeon"})),
            400,
        ),
        (
            "config not an object",
            "POST",
            post,
            "application/json",
            with(json!({"config": "weft agent"})),
            400,
        ),
        (
            "config mechanism mismatch",
            "POST",
            post,
            "application/json",
            with(json!({"config": {"mechanism": "ssh", "command": "x"}})),
            400,
        ),
        (
            "ssh without host",
            "POST",
            post,
            "application/json",
            with(json!({"mechanism": "ssh", "config": {"user": "u", "command": "c"}})),
            400,
        ),
        (
            "literal token",
            "POST",
            post,
            "application/json",
            with(
                json!({"mechanism": "github-actions", "config": {"repo": "a/b", "workflow": "w", "token": "ghp_secret"}}),
            ),
            400,
        ),
        (
            "webhook credential header",
            "POST",
            post,
            "application/json",
            with(
                json!({"mechanism": "webhook", "config": {"url": "http://127.0.0.1:1/x", "headers": {"Authorization": "Bearer s"}}}),
            ),
            400,
        ),
        (
            "webhook bad url",
            "POST",
            post,
            "application/json",
            with(json!({"mechanism": "webhook", "config": {"url": "ftp://x"}})),
            400,
        ),
        (
            "unknown config setting",
            "POST",
            post,
            "application/json",
            with(json!({"config": {"command": "x", "detatched": true}})),
            400,
        ),
        (
            "health interval too short",
            "POST",
            post,
            "application/json",
            with(json!({"healthCheck": {"enabled": true, "intervalMs": 5}})),
            400,
        ),
        (
            "bad project id",
            "POST",
            post,
            "application/json",
            with(json!({"projectId": "a.b"})),
            400,
        ),
        (
            "duplicate name",
            "POST",
            post,
            "application/json",
            local_target("existing").to_string(),
            409,
        ),
        (
            "wrong content type",
            "POST",
            post,
            "text/plain",
            with(json!({})),
            415,
        ),
        ("huge body", "POST", post, "application/json", huge, 413),
        (
            "update unknown field",
            "PUT",
            "/api/targets/existing",
            "application/json",
            json!({"name": "renamed"}).to_string(),
            400,
        ),
        (
            "update blank capability",
            "PUT",
            "/api/targets/existing",
            "application/json",
            json!({"capabilities": [""]}).to_string(),
            400,
        ),
        (
            "update bad config",
            "PUT",
            "/api/targets/existing",
            "application/json",
            json!({"config": {"command": ""}}).to_string(),
            400,
        ),
        (
            "update unknown target",
            "PUT",
            "/api/targets/ghost",
            "application/json",
            json!({"description": "x"}).to_string(),
            404,
        ),
        (
            "batch without selection",
            "POST",
            "/api/targets/disable-batch",
            "application/json",
            "{}".into(),
            400,
        ),
        (
            "batch ids not a list",
            "POST",
            "/api/targets/disable-batch",
            "application/json",
            json!({"targetIds": "x"}).to_string(),
            400,
        ),
        (
            "bad cursor",
            "GET",
            "/api/targets?cursor=!!!",
            "",
            String::new(),
            400,
        ),
        (
            "forged cursor",
            "GET",
            "/api/targets?cursor=eyJvZmZzZXQiOi01LCJsaW1pdCI6NX0",
            "",
            String::new(),
            400,
        ),
        (
            "limit out of range",
            "GET",
            "/api/targets?limit=0",
            "",
            String::new(),
            400,
        ),
        (
            "limit not a number",
            "GET",
            "/api/targets?limit=ten",
            "",
            String::new(),
            400,
        ),
        (
            "bad event aggregate",
            "GET",
            "/api/events?aggregate=planet",
            "",
            String::new(),
            400,
        ),
        (
            "bad event limit",
            "GET",
            "/api/events?limit=5000",
            "",
            String::new(),
            400,
        ),
        (
            "unknown route",
            "GET",
            "/api/nonexistent",
            "",
            String::new(),
            404,
        ),
        (
            "wrong method",
            "PATCH",
            "/api/targets",
            "application/json",
            "{}".into(),
            405,
        ),
        (
            "wrong method on health",
            "POST",
            "/health",
            "",
            String::new(),
            405,
        ),
    ];
    for (what, method, path, content_type, body, expected) in cases {
        let mut req = http
            .request(method.parse().expect("method"), weft.url(path))
            .body(body);
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        let (status, error) = call(req).await;
        assert_eq!(status, expected, "{what}: {error}");
        assert!(
            error["error"].is_string() && error["message"].is_string(),
            "{what}: not the error shape: {error}"
        );
    }
    assert_eq!(
        event_count(&http, &weft, None).await,
        before,
        "a rejected request recorded an event"
    );
    let (status, list) = call(http.get(weft.url("/api/targets"))).await;
    assert_eq!((status, &list["total"]), (200, &json!(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_before_anything_else() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("API_TOKENS", " alpha-token , beta-token".into()),
    ]);
    let http = client();

    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("no header", None, "Missing Authorization header"),
        (
            "wrong scheme",
            Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            "Invalid Authorization header format. Expected: Bearer <token>",
        ),
        (
            "no token",
            Some("Bearer"),
            "Invalid Authorization header format. Expected: Bearer <token>",
        ),
        (
            "wrong token",
            Some("Bearer gamma-token"),
            "Invalid authentication token",
        ),
        (
            "prefix of a token",
            Some("Bearer alpha"),
            "Invalid authentication token",
        ),
    ];
    for (what, header, message) in cases {
        // A malformed body must still get 401: auth comes before validation.
        let mut req = http
            .post(weft.url("/api/targets"))
            .header("content-type", "application/json")
            .body("{broken");
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let (status, body) = call(req).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["message"], message, "{what}");
    }
    let (status, _) = call(http.get(weft.url("/api/events"))).await;
    assert_eq!(status, 401);

    // Open routes.
    for open in ["/health", "/api/openapi.json"] {
        let (status, _) = call(http.get(weft.url(open))).await;
        assert_eq!(status, 200, "{open}");
    }
    let docs = http.get(weft.url("/api/docs")).send().await.expect("sent");
    assert_eq!(docs.status(), 200);

    // Either token works, with the scheme in any case, and is recorded as the actor.
    let (status, created) = call(
        http.post(weft.url("/api/targets"))
            .bearer_auth("beta-token")
            .json(&local_target("mine")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let actor = created["registeredByActor"]
        .as_str()
        .expect("actor")
        .to_string();
    assert!(
        actor.starts_with("token:") && !actor.contains("beta"),
        "{actor}"
    );
    let (status, events) = call(
        http.get(weft.url("/api/events?aggregate=target"))
            .header("authorization", "bearer alpha-token"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(events["count"], 1, "{events}");
    assert_eq!(events["events"][0]["actor"], actor.as_str());
}
