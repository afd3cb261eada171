//! Weft's JetStream topology as versioned migrations, and the upcasters that lift events
//! of older schema versions to the current one when they are read (history is never
//! rewritten).
//!
//! At start, [`apply`] checks the server, reads the version recorded in the `weft-meta`
//! bucket, runs the migrations above it in order and records the new version. Each step
//! creates or updates what it owns, so running twice changes nothing, and two instances
//! starting at once converge. A server recorded at a newer version than this binary knows
//! is refused: an old binary must not write into a topology it does not understand.

mod output;
mod upcast;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};

pub use output::{output_stream_config, OutputLimits, COPIED_FROM_HEADER};
pub use upcast::{decode, Upcaster, UPCASTERS};

pub const META_BUCKET: &str = "weft-meta";
pub const SNAPSHOT_BUCKET: &str = "weft-snapshots";
/// Who writes for which project: keys `project.<p>` (the lease, valued with the holder's
/// instance id) and `instance.<id>` (instances alive), all lapsing after the lease time.
pub const WRITER_BUCKET: &str = "weft-writers";
const SCHEMA_KEY: &str = "schema";

/// Oldest nats-server that serves everything Weft uses: async-nats' KV calls, the
/// `Nats-Expected-Last-Subject-Sequence-Subject` check, and the stream fields we set.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// One step of the topology.
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "event log stream WEFT_EVENTS and snapshot bucket",
    },
    Migration {
        version: 2,
        description: "atomic batches on the event log: a command's events commit together",
    },
    Migration {
        version: 3,
        description: "writer lease bucket weft-writers: one writer per project among instances",
    },
    Migration {
        version: 4,
        description: "output stream WEFT_OUTPUT: agents' lines kept apart from the log, within \
                      limits; the lines of old work.progressed events copied into it",
    },
];

/// What a deployment chooses about the topology, kept in step at every start (not a
/// version: changing it updates the streams and buckets in place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Replicas of every stream and bucket.
    pub replicas: usize,
    /// How long a writer lease lasts without renewal.
    pub writer_lease: Duration,
    /// What the output stream keeps.
    pub output: OutputLimits,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            replicas: 1,
            writer_lease: Duration::from_secs(5),
            output: OutputLimits::default(),
        }
    }
}

impl Error {
    /// Whether trying again may succeed: JetStream busy or still forming (a cluster whose
    /// servers have not all joined yet), not a refusal that stays.
    pub fn may_pass(&self) -> bool {
        matches!(self, Error::JetStream { .. } | Error::Placement { .. })
    }
}

pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "nats-server {found} is too old: Weft needs {}.{} or newer with JetStream enabled \
         (scripts/install-nats-server.sh installs one)",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    ServerTooOld { found: String },
    #[error(
        "the NATS server holds Weft schema v{found}, but this weft binary only knows up to \
         v{known}; run a newer weft (refusing to start rather than write into a topology \
         this binary does not understand)"
    )]
    NewerSchema { found: u32, known: u32 },
    #[error("the recorded schema version is unreadable ({0}); fix or delete key '{SCHEMA_KEY}' in bucket '{META_BUCKET}'")]
    CorruptRecord(String),
    #[error(
        "the NATS server cannot place {replicas} replicas: it is not part of a cluster; \
         WEFT_REPLICAS must be 1 without a cluster (as with the embedded default)"
    )]
    NotClustered { replicas: usize },
    #[error(
        "the NATS servers cannot place {replicas} replicas of {stream} ({message}); \
         WEFT_REPLICAS must be at most the number of JetStream servers in the cluster \
         (1 without a cluster, as with the embedded default)"
    )]
    Placement {
        stream: String,
        replicas: usize,
        message: String,
    },
    #[error("JetStream request failed while applying migration v{version}: {message}")]
    JetStream { version: u32, message: String },
}

/// What the `schema` key of `weft-meta` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRecord {
    pub version: u32,
    pub applied_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub previous: u32,
    pub current: u32,
}

pub fn check_server_version(version: &str) -> Result<(), Error> {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found >= MIN_SERVER_VERSION {
        Ok(())
    } else {
        Err(Error::ServerTooOld {
            found: version.to_string(),
        })
    }
}

pub fn event_stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        num_replicas: replicas,
        name: events::STREAM.to_string(),
        description: Some("Weft event log: every state change, never deleted".into()),
        subjects: vec![events::subject::ALL.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::ZERO,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120),
        allow_atomic_publish: true,
        ..Default::default()
    }
}

pub fn snapshot_bucket_config(replicas: usize) -> kv::Config {
    kv::Config {
        num_replicas: replicas,
        bucket: SNAPSHOT_BUCKET.to_string(),
        description: "Weft projection snapshots (a cache: the event log is the truth)".into(),
        history: 1,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

pub fn writer_bucket_config(topology: &Topology) -> kv::Config {
    kv::Config {
        bucket: WRITER_BUCKET.to_string(),
        description: "Weft writer leases and live instances (each lapses after the lease time)"
            .into(),
        history: 1,
        max_age: topology.writer_lease,
        storage: stream::StorageType::File,
        num_replicas: topology.replicas,
        ..Default::default()
    }
}

fn meta_bucket_config(replicas: usize) -> kv::Config {
    kv::Config {
        num_replicas: replicas,
        bucket: META_BUCKET.to_string(),
        description: "Weft topology version".into(),
        history: 5,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

async fn run(
    js: &jetstream::Context,
    migration: &Migration,
    topology: &Topology,
) -> Result<(), Error> {
    let fail = |e: &dyn std::fmt::Display| Error::JetStream {
        version: migration.version,
        message: e.to_string(),
    };
    match migration.version {
        1 => {
            js.create_or_update_stream(event_stream_config(topology.replicas))
                .await
                .map_err(|e| fail(&e))?;
            js.create_or_update_key_value(snapshot_bucket_config(topology.replicas))
                .await
                .map_err(|e| fail(&e))?;
        }
        // The stream as it is now: version 1 created it, this allows atomic batches on it.
        2 => {
            js.create_or_update_stream(event_stream_config(topology.replicas))
                .await
                .map_err(|e| fail(&e))?;
        }
        3 => {
            js.create_or_update_key_value(writer_bucket_config(topology))
                .await
                .map_err(|e| fail(&e))?;
        }
        4 => {
            js.create_or_update_stream(output_stream_config(&topology.output, topology.replicas))
                .await
                .map_err(|e| fail(&e))?;
            let copied = output::copy_progress(js).await.map_err(|e| fail(&e))?;
            tracing::info!(copied, "old progress lines copied into the output stream");
        }
        other => unreachable!("migration v{other} is listed but has no step"),
    }
    Ok(())
}

async fn meta_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, Error> {
    if let Ok(store) = js.get_key_value(META_BUCKET).await {
        return Ok(store);
    }
    js.create_or_update_key_value(meta_bucket_config(replicas))
        .await
        .map_err(|e| Error::JetStream {
            version: 0,
            message: e.to_string(),
        })
}

async fn read_record(meta: &kv::Store) -> Result<(Option<SchemaRecord>, u64), Error> {
    let entry = meta.entry(SCHEMA_KEY).await.map_err(|e| Error::JetStream {
        version: 0,
        message: e.to_string(),
    })?;
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let record = serde_json::from_slice(&entry.value)
                .map_err(|e| Error::CorruptRecord(e.to_string()))?;
            Ok((Some(record), entry.revision))
        }
        Some(entry) => Ok((None, entry.revision)),
        None => Ok((None, 0)),
    }
}

/// Brings the server's topology to [`latest_version`] and to `topology` (replicas, lease
/// time). `applied_by` names this binary in the record (for example `weft 0.1.0`).
pub async fn apply(
    client: &async_nats::Client,
    applied_by: &str,
    topology: &Topology,
) -> Result<Outcome, Error> {
    check_server_version(&client.server_info().version)?;
    if topology.replicas > 1 && client.server_info().cluster.is_none() {
        return Err(Error::NotClustered {
            replicas: topology.replicas,
        });
    }
    let js = jetstream::new(client.clone());
    let meta = meta_bucket(&js, topology.replicas)
        .await
        .map_err(|e| match e {
            Error::JetStream { message, .. } => Error::Placement {
                stream: format!("KV_{META_BUCKET}"),
                replicas: topology.replicas,
                message,
            },
            other => other,
        })?;
    let outcome = apply_versions(&js, &meta, applied_by, topology).await?;
    keep_topology(&js, topology).await?;
    Ok(outcome)
}

/// Every stream Weft keeps, as JetStream names them.
fn streams() -> [String; 5] {
    [
        events::STREAM.to_string(),
        events::output::STREAM.to_string(),
        format!("KV_{SNAPSHOT_BUCKET}"),
        format!("KV_{META_BUCKET}"),
        format!("KV_{WRITER_BUCKET}"),
    ]
}

/// Sets the replicas of every stream and the writer bucket's lease time where they differ
/// from `topology`: raising the replicas on an existing deployment is done here, in place.
/// A JetStream API that does not answer in time (a busy cluster) is asked again.
async fn keep_topology(js: &jetstream::Context, topology: &Topology) -> Result<(), Error> {
    use backon::Retryable;
    for name in streams() {
        let attempt = || reconcile(js, &name, topology);
        attempt
            .retry(
                backon::ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(6),
            )
            .sleep(tokio::time::sleep)
            .when(|e| e.timed_out)
            .await
            .map_err(|e| Error::Placement {
                stream: name.clone(),
                replicas: topology.replicas,
                message: e.message,
            })?;
    }
    Ok(())
}

/// Why a stream could not be brought to the topology.
struct NotReconciled {
    timed_out: bool,
    message: String,
}

impl NotReconciled {
    fn new(timed_out: bool, e: impl std::fmt::Display) -> Self {
        NotReconciled {
            timed_out,
            message: e.to_string(),
        }
    }
}

async fn reconcile(
    js: &jetstream::Context,
    name: &str,
    topology: &Topology,
) -> Result<(), NotReconciled> {
    use jetstream::context::{GetStreamErrorKind, RequestErrorKind, UpdateStreamErrorKind};
    let mut stream = js
        .get_stream(name)
        .await
        .map_err(|e| NotReconciled::new(e.kind() == GetStreamErrorKind::Request, e))?;
    let mut config = stream
        .info()
        .await
        .map_err(|e| {
            let busy = matches!(
                e.kind(),
                RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
            );
            NotReconciled::new(busy, e)
        })?
        .config
        .clone();
    let wanted = wanted_config(name, &config, topology);
    let unchanged = config.num_replicas.max(1) == wanted.num_replicas
        && config.max_age == wanted.max_age
        && config.max_messages_per_subject == wanted.max_messages_per_subject
        && config.max_bytes == wanted.max_bytes;
    if unchanged {
        return Ok(());
    }
    tracing::info!(
        stream = name,
        from = config.num_replicas.max(1),
        to = topology.replicas,
        "updating the stream's replicas in place"
    );
    let added = topology.replicas > config.num_replicas.max(1);
    config = wanted;
    js.update_stream(&config).await.map_err(|e| {
        let busy = matches!(
            e.kind(),
            UpdateStreamErrorKind::TimedOut | UpdateStreamErrorKind::JetStreamUnavailable
        );
        NotReconciled::new(busy, e)
    })?;
    if added {
        // Until the new replicas hold everything, losing the old ones loses data: do not
        // report the change done before it is.
        wait_until_current(js, name, topology.replicas).await;
    }
    Ok(())
}

/// `config` of stream `name` as `topology` wants it: the replicas of every stream, the
/// writer bucket's lease time, the output stream's limits.
fn wanted_config(name: &str, config: &stream::Config, topology: &Topology) -> stream::Config {
    let mut wanted = config.clone();
    wanted.num_replicas = topology.replicas;
    if name == format!("KV_{WRITER_BUCKET}") {
        wanted.max_age = topology.writer_lease;
    }
    if name == events::output::STREAM {
        let limits = &topology.output;
        wanted.max_age = limits.max_age;
        wanted.max_messages_per_subject = limits.chunks_per_item;
        wanted.max_bytes = limits.max_bytes;
    }
    wanted
}

/// Waits (at most two minutes, reporting progress) until every replica of `name` has
/// caught up with its leader.
async fn wait_until_current(js: &jetstream::Context, name: &str, replicas: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut reported = std::time::Instant::now();
    loop {
        let current = match js.get_stream(name).await {
            Ok(mut stream) => stream.info().await.ok().and_then(|info| {
                let cluster = info.cluster.as_ref()?;
                let followers = &cluster.replicas;
                Some(
                    cluster.leader.is_some()
                        && followers.len() + 1 >= replicas
                        && followers.iter().all(|r| r.current),
                )
            }),
            Err(_) => None,
        };
        if current == Some(true) {
            tracing::info!(stream = name, replicas, "every replica is current");
            return;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(
                stream = name,
                "the new replicas are still catching up; do not take servers down until \
                 they are current"
            );
            return;
        }
        if reported.elapsed() > Duration::from_secs(5) {
            tracing::info!(stream = name, "waiting for the new replicas to catch up");
            reported = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apply_versions(
    js: &jetstream::Context,
    meta: &kv::Store,
    applied_by: &str,
    topology: &Topology,
) -> Result<Outcome, Error> {
    let known = latest_version();
    // Bounded: a lost race only means another instance recorded first.
    for _ in 0..5 {
        let (record, revision) = read_record(meta).await?;
        let previous = record.as_ref().map_or(0, |r| r.version);
        if previous > known {
            return Err(Error::NewerSchema {
                found: previous,
                known,
            });
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > previous) {
            tracing::info!(
                version = migration.version,
                "applying migration: {}",
                migration.description
            );
            run(js, migration, topology).await?;
        }
        if previous == known {
            return Ok(Outcome {
                previous,
                current: known,
            });
        }
        let value = serde_json::to_vec(&SchemaRecord {
            version: known,
            applied_by: applied_by.to_string(),
        })
        .expect("record serializes");
        let written = if revision == 0 {
            meta.create(SCHEMA_KEY, value.into()).await.is_ok()
        } else {
            meta.update(SCHEMA_KEY, value.into(), revision)
                .await
                .is_ok()
        };
        if written {
            return Ok(Outcome {
                previous,
                current: known,
            });
        }
    }
    Err(Error::JetStream {
        version: known,
        message: "could not record the schema version: the record kept changing".into(),
    })
}

/// Records a version by hand; for tests of the "newer schema" refusal and for operators
/// rolling a record back after restoring an old backup.
pub async fn record_version(client: &async_nats::Client, version: u32) -> Result<(), Error> {
    let js = jetstream::new(client.clone());
    let meta = meta_bucket(&js, 1).await?;
    let value = serde_json::to_vec(&SchemaRecord {
        version,
        applied_by: "record_version".into(),
    })
    .expect("record serializes");
    meta.put(SCHEMA_KEY, value.into())
        .await
        .map_err(|e| Error::JetStream {
            version,
            message: e.to_string(),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_are_compared_numerically() {
        for ok in ["2.12.0", "v2.15.1", "2.20.0-beta", "3.0.0"] {
            assert!(check_server_version(ok).is_ok(), "{ok}");
        }
        for old in ["2.9.10", "2.11.9", "1.99.0", "garbage", ""] {
            assert!(check_server_version(old).is_err(), "{old}");
        }
    }

    #[test]
    fn migrations_are_numbered_consecutively_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
    }
}
