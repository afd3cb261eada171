//! The Warp bridge: agents running the original's Warp MCP server get work the way Warp
//! reads it. For each live entry of the `agent-registry` bucket, the bridge is that
//! agent's side of our agent protocol (it registers it, heartbeats for it while its entry
//! is fresh, and reports for it), so routing, leases, fencing and liveness are the ones
//! every agent has. What Weft assigns to a Warp agent is published as a Warp work item on
//! `global.workqueue.<capability>`; Weft is registered in the bucket as the coordinator
//! and reads its inbox (`global.agent.<guid>`), where Warp agents send `work-claim`,
//! `progress-update`, `work-complete` and `work-error`. Nothing else of Warp's is touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::commands::Commands;
use crate::protocol::{self, Assignment, Reply, WorkReport};
use crate::registry::{WarpAgent, WarpRegistry, BUCKET};
use crate::time::{now_ms, rfc3339};

/// Weft's identity in Warp's world: 32 hex characters, as Warp's own ids, the same on
/// every instance and across restarts.
pub fn coordinator_guid() -> String {
    hex::encode(&Sha256::digest(b"weft coordinator")[..16])
}

/// How often the bridge looks at the registry and heartbeats for the agents it bridges.
const TICK: Duration = Duration::from_millis(500);
/// How often Weft's own registry entry is refreshed (Warp beats every 60 s).
const PRESENCE_EVERY: Duration = Duration::from_secs(30);
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// `WORKQUEUE_<CAP>`: the capability with non-alphanumerics as `_`, upper-cased (Warp's).
pub fn work_queue_stream(capability: &str) -> String {
    let cap: String = capability
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("WORKQUEUE_{cap}")
}

fn inbox_name(guid: &str) -> String {
    guid.replace('-', "_")
}

/// One Warp agent the bridge speaks for.
struct Bridged {
    project: String,
    heartbeat_ms: u64,
    last_beat_ms: u64,
    /// Its current assignments by work id (their leases name its reports).
    assigned: HashMap<String, Assignment>,
    /// Leases already published to the work queue.
    published: std::collections::HashSet<String>,
    /// Items it claimed (its `running`, for heartbeats).
    claimed: std::collections::HashSet<String>,
}

pub struct WarpBridge {
    client: async_nats::Client,
    js: jetstream::Context,
    registry: Arc<WarpRegistry>,
    commands: Arc<Commands>,
    guid: String,
    bridged: Mutex<HashMap<String, Bridged>>,
}

impl WarpBridge {
    pub fn new(
        client: async_nats::Client,
        registry: Arc<WarpRegistry>,
        commands: Arc<Commands>,
    ) -> Arc<Self> {
        Arc::new(WarpBridge {
            js: jetstream::new(client.clone()),
            client,
            registry,
            commands,
            guid: coordinator_guid(),
            bridged: Mutex::new(HashMap::new()),
        })
    }

    fn bridged(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bridged>> {
        self.bridged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs until `shutdown`: presence, the inbox, and the agents' side of the protocol.
    /// Nothing of Warp's is created before the registry holds a Warp agent.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_presence = 0;
        let mut reading = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            if self.registry.all().is_empty() {
                continue;
            }
            if !reading {
                tokio::spawn(self.clone().read_inbox(shutdown.clone()));
                reading = true;
            }
            if now_ms().saturating_sub(last_presence) >= PRESENCE_EVERY.as_millis() as u64 {
                match self.announce().await {
                    Ok(()) => last_presence = now_ms(),
                    Err(e) => tracing::debug!("Weft's registry entry not written: {e}"),
                }
            }
            self.tend().await;
        }
    }

    /// Weft's entry in `agent-registry`, so Warp agents can address its inbox.
    async fn announce(&self) -> Result<(), String> {
        let kv = self
            .js
            .get_key_value(BUCKET)
            .await
            .map_err(|e| e.to_string())?;
        let now = rfc3339(now_ms());
        let entry = json!({
            "guid": self.guid, "agentType": "coordinator", "handle": "weft",
            "hostname": std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
            "capabilities": [], "scope": "public", "status": "online", "currentTaskCount": 0,
            "registeredAt": now, "lastHeartbeat": now,
        });
        kv.put(&self.guid, entry.to_string().into())
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// This instance speaks for a project's Warp agents when it writes for the project,
    /// or nobody does yet (the first registration elects a writer).
    fn speaks_for(&self, project: &str) -> bool {
        !matches!(
            self.commands.role(project),
            crate::leases::Role::Standby { .. }
        )
    }

    /// Registers the registry's live Warp agents, heartbeats for them, publishes what is
    /// assigned to them, and lets go of those whose entries went quiet.
    async fn tend(&self) {
        let now = now_ms();
        let live: HashMap<String, WarpAgent> = self
            .registry
            .all()
            .iter()
            .filter_map(|(key, entry)| WarpAgent::parse(key, entry))
            .filter(|a| a.is_live(now) && events::subject::is_valid_token(&a.project_id))
            .filter(|a| events::subject::is_valid_token(&a.guid))
            .filter(|a| self.speaks_for(&a.project_id))
            .map(|a| (a.guid.clone(), a))
            .collect();
        let gone: Vec<(String, String)> = self
            .bridged()
            .iter()
            .filter(|(guid, _)| !live.contains_key(*guid))
            .map(|(guid, b)| (guid.clone(), b.project.clone()))
            .collect();
        for (guid, project) in gone {
            self.bridged().remove(&guid);
            let leave = protocol::DeregisterRequest {
                agent_id: guid.clone(),
            };
            let _ = protocol::call::<_, Value>(
                &self.client,
                &project,
                protocol::DEREGISTER,
                &guid,
                &leave,
                ANSWER_WITHIN,
            )
            .await;
            tracing::info!(
                agent = guid,
                project,
                "Warp agent gone quiet; no longer bridged"
            );
        }
        for (guid, agent) in live {
            let due = self
                .bridged()
                .get(&guid)
                .map(|b| now.saturating_sub(b.last_beat_ms) >= b.heartbeat_ms);
            match due {
                None => self.register(&agent).await,
                Some(true) => self.heartbeat(&guid).await,
                Some(false) => {}
            }
        }
    }

    async fn register(&self, agent: &WarpAgent) {
        let request = protocol::RegisterRequest {
            agent_id: agent.guid.clone(),
            agent_type: agent.agent_type.clone(),
            capabilities: agent.capabilities.clone(),
            boundaries: agent.boundaries.clone(),
            max_concurrent_tasks: agent.max_concurrent_tasks,
            // Never asked to leave when idle: Weft did not start it and cannot stop it, and
            // a shutdown request would stop routing to it.
            idle_timeout_ms: Some(0),
            hostname: agent.hostname.clone(),
            handle: agent.handle.clone(),
            spin_up_id: None,
            target_id: None,
        };
        match protocol::call::<_, protocol::RegisterReply>(
            &self.client,
            &agent.project_id,
            protocol::REGISTER,
            &request.agent_id,
            &request,
            ANSWER_WITHIN,
        )
        .await
        {
            Ok(Reply {
                ok: true,
                data: Some(settings),
                ..
            }) => {
                tracing::info!(
                    agent = agent.guid,
                    project = agent.project_id,
                    "Warp agent bridged"
                );
                self.bridged().insert(
                    agent.guid.clone(),
                    Bridged {
                        project: agent.project_id.clone(),
                        heartbeat_ms: settings.heartbeat_interval_ms.max(100),
                        last_beat_ms: now_ms(),
                        assigned: HashMap::new(),
                        published: Default::default(),
                        claimed: Default::default(),
                    },
                );
            }
            Ok(reply) => tracing::warn!(
                agent = agent.guid,
                "Warp agent not registered: {}",
                reply.error.unwrap_or_default()
            ),
            Err(e) => tracing::debug!(agent = agent.guid, "Warp agent not registered yet: {e}"),
        }
    }

    async fn heartbeat(&self, guid: &str) {
        let Some((project, running)) = self.bridged().get_mut(guid).map(|b| {
            b.last_beat_ms = now_ms();
            (b.project.clone(), b.claimed.iter().cloned().collect())
        }) else {
            return;
        };
        let request = protocol::HeartbeatRequest {
            agent_id: guid.to_string(),
            running,
        };
        let reply = match protocol::call::<_, protocol::HeartbeatReply>(
            &self.client,
            &project,
            protocol::HEARTBEAT,
            guid,
            &request,
            ANSWER_WITHIN,
        )
        .await
        {
            Ok(Reply {
                ok: true,
                data: Some(reply),
                ..
            }) => reply,
            _ => return,
        };
        if !reply.registered {
            // Marked offline meanwhile: register again at the next look.
            self.bridged().remove(guid);
            return;
        }
        let to_publish: Vec<Assignment> = {
            let mut bridged = self.bridged();
            let Some(b) = bridged.get_mut(guid) else {
                return;
            };
            for id in &reply.cancel {
                b.claimed.remove(id);
            }
            b.assigned = reply
                .assignments
                .iter()
                .map(|a| (a.work_id.clone(), a.clone()))
                .collect();
            b.claimed.retain(|id| b.assigned.contains_key(id));
            b.published
                .retain(|lease| b.assigned.values().any(|a| &a.lease_id == lease));
            let fresh: Vec<Assignment> = reply
                .assignments
                .into_iter()
                .filter(|a| !b.published.contains(&a.lease_id))
                .collect();
            for a in &fresh {
                b.published.insert(a.lease_id.clone());
            }
            fresh
        };
        for assignment in to_publish {
            if let Err(e) = self.publish(&assignment).await {
                tracing::warn!(
                    work = assignment.work_id,
                    "not published to Warp's work queue: {e}"
                );
                if let Some(b) = self.bridged().get_mut(guid) {
                    b.published.remove(&assignment.lease_id);
                }
            }
        }
    }

    /// A Warp work item on `global.workqueue.<capability>`, creating `WORKQUEUE_<CAP>` with
    /// Warp's settings only when it does not exist.
    async fn publish(&self, a: &Assignment) -> Result<(), String> {
        let subject = format!("global.workqueue.{}", a.capability);
        let name = work_queue_stream(&a.capability);
        if self.js.get_stream(&name).await.is_err() {
            self.js
                .create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![subject.clone()],
                    retention: stream::RetentionPolicy::WorkQueue,
                    max_age: Duration::from_secs(7 * 24 * 3600),
                    storage: stream::StorageType::File,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut item = json!({
            "id": a.work_id, "taskId": a.task_id, "capability": a.capability,
            "description": a.description, "priority": a.priority,
            "offeredBy": self.guid, "offeredAt": rfc3339(now_ms()), "attempts": 0,
        });
        if let Some(deadline) = &a.deadline {
            item["deadline"] = json!(deadline);
        }
        if let Some(context) = &a.context_data {
            item["contextData"] = context.clone();
        }
        self.js
            .publish(subject, item.to_string().into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            work = a.work_id,
            capability = a.capability,
            "offered to Warp agents"
        );
        Ok(())
    }

    /// Reads Weft's inbox (`INBOX_<guid>`, created with Warp's settings) and turns the
    /// Warp agents' reports into the agent protocol's.
    async fn read_inbox(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.follow_inbox() => {
                    if let Err(e) = outcome {
                        tracing::debug!("Weft's Warp inbox: {e}");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn follow_inbox(&self) -> Result<(), String> {
        let name = inbox_name(&self.guid);
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: format!("INBOX_{name}"),
                subjects: vec![format!("global.agent.{}", self.guid)],
                max_messages: 1000,
                max_age: Duration::from_secs(7 * 24 * 3600),
                storage: stream::StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &format!("inbox_consumer_{name}"),
                consumer::pull::Config {
                    durable_name: Some(format!("inbox_consumer_{name}")),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| e.to_string())?;
            // A report that cannot be handed on now (Weft busy) is read again later.
            match self.handle(&message.payload).await {
                Ok(()) => {
                    let _ = message.ack().await;
                }
                Err(e) => {
                    tracing::warn!("Warp inbox message not handled yet: {e}");
                    let _ = message
                        .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        }
        Ok(())
    }

    /// One inbox message. `Err` only when it should be read again.
    async fn handle(&self, payload: &[u8]) -> Result<(), String> {
        let Ok(message) = serde_json::from_slice::<Value>(payload) else {
            tracing::debug!("ignoring an inbox message that is not JSON");
            return Ok(());
        };
        let sender = message["senderGuid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = message["messageType"].as_str().unwrap_or_default();
        let content: Value = message["content"]
            .as_str()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or(Value::Null);
        let Some(work_id) = content["workItemId"].as_str() else {
            return Ok(());
        };
        let found = self.bridged().get(&sender).and_then(|b| {
            b.assigned
                .get(work_id)
                .map(|a| (b.project.clone(), a.lease_id.clone()))
        });
        let Some((project, lease_id)) = found else {
            tracing::warn!(
                agent = sender,
                work = work_id,
                kind,
                "a Warp agent reported on an item that is not assigned to it"
            );
            self.reject(&sender, work_id, "not assigned to you").await;
            return Ok(());
        };
        let mut report = WorkReport::on(&sender, work_id, &lease_id);
        let operation = match kind {
            "work-claim" => protocol::ACCEPT,
            "progress-update" => {
                report.progress = content["progress"].as_u64().map(|p| p.min(100) as u8);
                report.message = content["message"].as_str().map(String::from);
                protocol::PROGRESS
            }
            "work-complete" => {
                report.message = Some(
                    content["summary"]
                        .as_str()
                        .unwrap_or("completed by a Warp agent")
                        .to_string(),
                );
                report.output = match &content["result"] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                protocol::COMPLETE
            }
            "work-error" => {
                report.message = Some(
                    content["error"]
                        .as_str()
                        .unwrap_or("failed in a Warp agent")
                        .to_string(),
                );
                report.recoverable = Some(content["recoverable"].as_bool().unwrap_or(true));
                protocol::FAIL
            }
            _ => return Ok(()),
        };
        let reply: Reply<Value> = protocol::call(
            &self.client,
            &project,
            operation,
            &report.agent_id,
            &report,
            ANSWER_WITHIN,
        )
        .await?;
        if reply.code.as_deref() == Some(protocol::codes::UNAVAILABLE) {
            return Err(reply.error.unwrap_or_default());
        }
        if let Some(b) = self.bridged().get_mut(&sender) {
            match operation {
                protocol::ACCEPT if reply.ok => {
                    b.claimed.insert(work_id.to_string());
                }
                protocol::COMPLETE | protocol::FAIL => {
                    b.claimed.remove(work_id);
                    b.assigned.remove(work_id);
                }
                _ => {}
            }
        }
        if !reply.ok {
            tracing::warn!(
                agent = sender,
                work = work_id,
                kind,
                "Weft refused a Warp agent's report: {}",
                reply.error.unwrap_or_default()
            );
            self.reject(&sender, work_id, "refused by Weft (the lease is gone)")
                .await;
        }
        Ok(())
    }

    /// Tells a Warp agent, in its inbox, that its report was not taken.
    async fn reject(&self, agent: &str, work_id: &str, reason: &str) {
        if !events::subject::is_valid_token(agent) {
            return;
        }
        let message = json!({
            "id": uuid::Uuid::new_v4().to_string(), "senderGuid": self.guid, "senderHandle": "weft",
            "recipientGuid": agent, "messageType": "work-reject",
            "content": json!({"workItemId": work_id, "reason": reason}).to_string(),
            "timestamp": rfc3339(now_ms()),
        });
        let _ = self
            .js
            .publish(format!("global.agent.{agent}"), message.to_string().into())
            .await;
    }
}
