//! Shuttle on the live feed (`/api/ws`): following a submitted item until it ends, and
//! `shuttle watch`.

use std::io::IsTerminal;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use weft::cli::CliError;

use crate::config::Context;
use crate::output::{enc, text_of};

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
pub(crate) async fn open_socket(ctx: &Context) -> Result<Socket, CliError> {
    let url = format!("{}/api/ws", ctx.api.base.replacen("http", "ws", 1));
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(token) = &ctx.api.token {
        let offered = format!("bearer, {token}")
            .parse()
            .map_err(|_| CliError::Usage("the token is not a valid header value".into()))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| CliError::Unreachable(format!("cannot open the live feed at {url}: {e}")))?;
    Ok(socket)
}

pub(crate) async fn follow_task(ctx: &Context, task_id: &str) -> Result<Socket, CliError> {
    let mut socket = open_socket(ctx).await?;
    let subscribe = json!({"type": "subscribe", "topic": "work", "filter": {"taskId": task_id}});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?;
    Ok(socket)
}

/// Follows the item until it ends: 0 when it completes, 1 otherwise.
pub(crate) async fn wait_for(
    ctx: &Context,
    mut socket: Socket,
    id: String,
) -> Result<(), CliError> {
    let spinner = ["|", "/", "-", "\\"];
    let interactive = std::io::stderr().is_terminal() && !ctx.json;
    let mut tick = 0usize;
    loop {
        let message = match tokio::time::timeout(Duration::from_millis(250), socket.next()).await {
            Err(_) => {
                if interactive {
                    tick += 1;
                    eprint!("\r{} waiting for {id}", spinner[tick % 4]);
                }
                continue;
            }
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            Ok(_) => {
                return Err(CliError::Unreachable(
                    "the live feed closed before the item ended".into(),
                ))
            }
        };
        let event: Value = serde_json::from_str(&message).unwrap_or_default();
        if event["type"] != "event" {
            continue;
        }
        let data = &event["data"];
        let kind = text_of(&event["event"]);
        if interactive {
            eprint!("\r");
        }
        match kind.as_str() {
            "work:progress" => eprintln!(
                "  {}",
                text_of(&data["message"]).lines().last().unwrap_or_default()
            ),
            "work:assigned" => eprintln!("assigned to {}", text_of(&data["assignedTo"])),
            "work:started" => eprintln!("started"),
            _ => {}
        }
        let done = matches!(
            kind.as_str(),
            "work:completed" | "work:failed" | "work:cancelled"
        );
        // A failed attempt that will be retried is not the end.
        let retrying = kind == "work:failed" && {
            let item = ctx.api.get(&format!("/api/work/{}", enc(&id))).await?;
            item["status"] == "pending"
        };
        if done && !retrying {
            let item = ctx.api.get(&format!("/api/work/{}", enc(&id))).await?;
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&item).unwrap_or_default()
                );
            } else {
                println!(
                    "{}: {}",
                    text_of(&item["status"]),
                    text_of(&item["result"]["summary"])
                        .lines()
                        .last()
                        .unwrap_or(&text_of(&item["error"]["message"]))
                );
            }
            return if item["status"] == "completed" {
                Ok(())
            } else {
                Err(CliError::Refused(format!(
                    "work item {id} ended {}",
                    text_of(&item["status"])
                )))
            };
        }
    }
}

pub(crate) async fn watch(ctx: &Context) -> Result<(), CliError> {
    let mut socket = open_socket(ctx).await?;
    for topic in ["work", "agents", "targets"] {
        let message = json!({"type": "subscribe", "topic": topic});
        socket
            .send(Message::Text(message.to_string().into()))
            .await
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
    }
    let print_counts = || async {
        if let Ok(stats) = ctx.api.get("/api/stats").await {
            let t = &stats["totals"];
            println!(
                "-- agents {}  pending {}  active {}  completed {}  failed {}  targets {}",
                text_of(&t["agents"]),
                text_of(&t["pendingWork"]),
                text_of(&t["activeWork"]),
                text_of(&t["completedWork"]),
                text_of(&t["failedWork"]),
                text_of(&t["targets"])
            );
        }
    };
    print_counts().await;
    while let Some(message) = socket.next().await {
        let Ok(Message::Text(text)) = message else {
            continue;
        };
        let event: Value = serde_json::from_str(&text).unwrap_or_default();
        if event["type"] != "event" {
            continue;
        }
        let d = &event["data"];
        let subject = [&d["workId"], &d["targetName"], &d["agent"]["guid"]]
            .into_iter()
            .map(text_of)
            .find(|x| !x.is_empty())
            .unwrap_or_default();
        println!(
            "{} #{} {} {subject}",
            text_of(&event["timestamp"]),
            text_of(&event["sequence"]),
            text_of(&event["event"])
        );
        print_counts().await;
    }
    Err(CliError::Unreachable("the live feed closed".into()))
}
