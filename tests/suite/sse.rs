//! `GET /api/events/stream`: Server-Sent Events of the live view, read by a real HTTP
//! client; a reconnect with `Last-Event-ID` gets every missed event once, then live ones.

use crate::common;
use common::{call, client, submit_body, NatsServer, SseStream, Weft};

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reconnects_with_last_event_id_gets_what_it_missed_once_then_live() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[("NATS_URL", nats.url())]);
    let mut stream =
        SseStream::open(&weft, "/api/events/stream?topic=work&status=pending", None).await;
    let first = common::submit(&weft, "first").await;
    let (first_id, event) = stream.next().await;
    assert_eq!(event["event"], "work:submitted", "{event}");
    assert_eq!(event["data"]["workId"], first.as_str());
    assert_eq!(
        event["sequence"].as_u64(),
        Some(first_id),
        "id: is the log sequence"
    );
    drop(stream);

    // Missed while away: three items.
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(common::submit(&weft, &format!("missed {i}")).await);
    }
    let mut stream = SseStream::open(
        &weft,
        "/api/events/stream?topic=work&status=pending",
        Some(&first_id.to_string()),
    )
    .await;
    let mut seen = Vec::new();
    let mut last = first_id;
    for _ in 0..3 {
        let (id, event) = stream.next().await;
        assert!(id > last, "in log order, none twice: {id} after {last}");
        last = id;
        seen.push(
            event["data"]["workId"]
                .as_str()
                .expect("workId")
                .to_string(),
        );
    }
    assert_eq!(seen, missed, "every missed event, once, in order");
    // Then live.
    let live = common::submit(&weft, "live").await;
    let (id, event) = stream.next().await;
    assert!(id > last);
    assert_eq!(event["data"]["workId"], live.as_str(), "{event}");

    // Filters and resume points are checked.
    let (status, body) = call(client().get(weft.url("/api/events/stream?topic=nonsense"))).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = call(
        client()
            .get(weft.url("/api/events/stream"))
            .header("last-event-id", "yesterday"),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_needs_a_token_and_shows_only_its_projects() {
    let nats = NatsServer::start();
    let weft = Weft::start(&[
        ("NATS_URL", nats.url()),
        ("API_TOKENS", "admin-of-sse".into()),
    ]);
    let (status, _) = call(client().get(weft.url("/api/events/stream"))).await;
    assert_eq!(status, 401);
    let (_, created) = call(
        client()
            .post(weft.url("/api/tokens"))
            .bearer_auth("admin-of-sse")
            .json(&serde_json::json!({"name": "sse", "role": "viewer", "projects": ["alpha"]})),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_string();
    let mut stream = SseStream::open(
        &weft,
        &format!("/api/events/stream?topic=work&token={secret}"),
        None,
    )
    .await;
    for project in ["beta", "alpha"] {
        let mut body = submit_body(project, "rust", "personal", 5);
        body["projectId"] = project.into();
        let (status, _) = call(
            client()
                .post(weft.url("/api/work"))
                .bearer_auth("admin-of-sse")
                .json(&body),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (_, event) = stream.next().await;
    assert_eq!(
        event["projectId"], "alpha",
        "beta's event is not shown: {event}"
    );
}
