//! Weft's JetStream topology as versioned migrations, and the upcasters that lift events
//! of older schema versions to the current one when they are read (history is never
//! rewritten).
//!
//! At start, [`apply`] checks the server, reads the version recorded in the `weft-meta`
//! bucket, runs the migrations above it in order and records the new version. Each step
//! creates or updates what it owns, so running twice changes nothing, and two instances
//! starting at once converge. A server recorded at a newer version than this binary knows
//! is refused: an old binary must not write into a topology it does not understand.

mod upcast;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};

pub use upcast::{decode, Upcaster, UPCASTERS};

pub const META_BUCKET: &str = "weft-meta";
pub const SNAPSHOT_BUCKET: &str = "weft-snapshots";
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
];

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

pub fn event_stream_config() -> stream::Config {
    stream::Config {
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

pub fn snapshot_bucket_config() -> kv::Config {
    kv::Config {
        bucket: SNAPSHOT_BUCKET.to_string(),
        description: "Weft projection snapshots (a cache: the event log is the truth)".into(),
        history: 1,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

fn meta_bucket_config() -> kv::Config {
    kv::Config {
        bucket: META_BUCKET.to_string(),
        description: "Weft topology version".into(),
        history: 5,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

async fn run(js: &jetstream::Context, migration: &Migration) -> Result<(), Error> {
    let fail = |e: &dyn std::fmt::Display| Error::JetStream {
        version: migration.version,
        message: e.to_string(),
    };
    match migration.version {
        1 => {
            js.create_or_update_stream(event_stream_config())
                .await
                .map_err(|e| fail(&e))?;
            js.create_or_update_key_value(snapshot_bucket_config())
                .await
                .map_err(|e| fail(&e))?;
        }
        // The stream as it is now: version 1 created it, this allows atomic batches on it.
        2 => {
            js.create_or_update_stream(event_stream_config())
                .await
                .map_err(|e| fail(&e))?;
        }
        other => unreachable!("migration v{other} is listed but has no step"),
    }
    Ok(())
}

async fn meta_bucket(js: &jetstream::Context) -> Result<kv::Store, Error> {
    if let Ok(store) = js.get_key_value(META_BUCKET).await {
        return Ok(store);
    }
    js.create_or_update_key_value(meta_bucket_config())
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

/// Brings the server's topology to [`latest_version`]. `applied_by` names this binary in
/// the record (for example `weft 0.1.0`).
pub async fn apply(client: &async_nats::Client, applied_by: &str) -> Result<Outcome, Error> {
    check_server_version(&client.server_info().version)?;
    let js = jetstream::new(client.clone());
    let meta = meta_bucket(&js).await?;
    let known = latest_version();
    // Bounded: a lost race only means another instance recorded first.
    for _ in 0..5 {
        let (record, revision) = read_record(&meta).await?;
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
            run(&js, migration).await?;
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
    let meta = meta_bucket(&js).await?;
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
