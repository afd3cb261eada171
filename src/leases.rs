//! Which instance writes for which project when several `weft serve` share one log.
//!
//! Each project's writer holds a lease: the key `project.<p>` of the KV bucket
//! `weft-writers`, valued with the holder's instance id and renewed (compare-and-set on its
//! revision) a few times per lease time; the bucket's age limit drops a key that is not
//! renewed. Every instance also keeps `instance.<id>` there while it runs, and watches the
//! whole bucket, so each knows who holds what and who is alive.
//!
//! The lease decides *who should* write, not who *can*: the log's fence does that (every
//! append expects the project's latest writer election, see [`crate::writer`]). So taking a
//! lease from an instance that is gone (its command subject has no responders) is safe even
//! if it is only cut off: its next append is refused, its next renewal fails, and it stops.
//!
//! Projects spread over the live instances by rendezvous hashing: a vacant lease is taken
//! at once by the instance the hash prefers, by any other after a lease time; a holder that
//! is not the preferred one hands the project over once the preferred instance has been up
//! for two lease times (so a restart does not move projects twice).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const PROJECT_KEY: &str = "project.";
const INSTANCE_KEY: &str = "instance.";

/// What this instance is for a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// It holds the lease: its writer decides and records the project's commands.
    Writer,
    /// Another instance does; commands go to it.
    Standby { holder: String, revision: u64 },
    /// Nobody holds the lease (or it lapsed).
    Vacant,
}

pub struct Leases {
    kv: kv::Store,
    instance: String,
    ttl: Duration,
    state: Mutex<State>,
    /// Wakes the renewal loop early: a lease was released, or a command found one vacant.
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Leases as last seen in the bucket, by project.
    holders: HashMap<String, Seen>,
    /// Instances alive, by id: when first and last seen.
    instances: HashMap<String, (Instant, Instant)>,
    /// The leases this instance holds: revision, when renewed, when taken.
    mine: HashMap<String, Held>,
    /// When each project was first seen vacant by this instance.
    vacant_since: HashMap<String, Instant>,
    /// Shutting down: take nothing more.
    leaving: bool,
}

struct Seen {
    holder: String,
    revision: u64,
    at: Instant,
}

struct Held {
    revision: u64,
    renewed: Instant,
    taken: Instant,
}

impl Leases {
    pub fn new(kv: kv::Store, instance: String, ttl: Duration) -> Arc<Self> {
        Arc::new(Leases {
            kv,
            instance,
            ttl,
            state: Mutex::default(),
            wake: Notify::new(),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease counts as held until a little before it would lapse in the bucket, so this
    /// instance stops writing before another may start.
    fn held_for(&self) -> Duration {
        self.ttl.mul_f64(0.8)
    }

    pub fn role(&self, project: &str) -> Role {
        let now = Instant::now();
        let state = self.state();
        if let Some(held) = state.mine.get(project) {
            if now.duration_since(held.renewed) < self.held_for() {
                return Role::Writer;
            }
        }
        match state.holders.get(project) {
            Some(seen)
                if seen.holder != self.instance && now.duration_since(seen.at) < self.ttl =>
            {
                Role::Standby {
                    holder: seen.holder.clone(),
                    revision: seen.revision,
                }
            }
            _ => Role::Vacant,
        }
    }

    pub fn holds(&self, project: &str) -> bool {
        self.role(project) == Role::Writer
    }

    /// The projects this instance writes for, sorted.
    pub fn held(&self) -> Vec<String> {
        let now = Instant::now();
        let mut held: Vec<String> = self
            .state()
            .mine
            .iter()
            .filter(|(_, h)| now.duration_since(h.renewed) < self.held_for())
            .map(|(p, _)| p.clone())
            .collect();
        held.sort();
        held
    }

    /// Takes the project's lease if it is vacant; true when this instance holds it now.
    pub async fn acquire(&self, project: &str) -> bool {
        if self.state().leaving {
            return false;
        }
        let key = format!("{PROJECT_KEY}{project}");
        match self.kv.create(&key, self.instance.clone().into()).await {
            Ok(revision) => {
                self.took(project, revision);
                true
            }
            Err(e) => {
                tracing::debug!(project, "lease not taken: {e}");
                // Someone holds it: learn who now rather than from the watch, later.
                if let Ok(Some(entry)) = self.kv.entry(&key).await {
                    self.saw(entry);
                }
                self.holds(project)
            }
        }
    }

    /// Takes the lease from `holder`, which is gone (its command subject has no responders,
    /// or it stopped renewing). Only if the lease is still at the revision it was seen with.
    pub async fn take_from(&self, project: &str, holder: &str, revision: u64) -> bool {
        let key = format!("{PROJECT_KEY}{project}");
        if let Err(e) = self.kv.delete_expect_revision(&key, Some(revision)).await {
            tracing::debug!(project, holder, "lease not taken over: {e}");
        } else {
            tracing::warn!(
                project,
                holder,
                "the project's writer is gone; taking its lease"
            );
        }
        self.acquire(project).await
    }

    fn took(&self, project: &str, revision: u64) {
        let now = Instant::now();
        let mut state = self.state();
        state.mine.insert(
            project.to_string(),
            Held {
                revision,
                renewed: now,
                taken: now,
            },
        );
        state.vacant_since.remove(project);
        tracing::info!(project, "writer lease taken");
    }

    /// Wakes the renewal loop to look at vacant leases now.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Keeps this instance's leases and presence until `leaving`, then releases them at
    /// once so standbys take over without waiting for them to lapse; goes on following who
    /// holds what until `done`. `projects` lists the projects there are (those with
    /// events).
    pub async fn run(
        self: Arc<Self>,
        projects: impl Fn() -> Vec<String>,
        leaving: CancellationToken,
        done: CancellationToken,
    ) {
        let watcher = tokio::spawn(self.clone().watch(done));
        let tick = (self.ttl / 5).max(Duration::from_millis(100));
        loop {
            self.renew().await;
            self.balance(&projects()).await;
            tokio::select! {
                _ = leaving.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
                _ = self.wake.notified() => {}
            }
        }
        self.release_all().await;
        let _ = watcher.await;
    }

    /// Follows the bucket: who holds what, who is alive.
    async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            // With history: the current holders first, then every change.
            let mut entries = match self.kv.watch_with_history(">").await {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!("cannot watch the writer leases: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let entry = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    entry = entries.next() => entry,
                };
                match entry {
                    Some(Ok(entry)) => self.saw(entry),
                    Some(Err(e)) => {
                        tracing::debug!("writer lease watch: {e}");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    fn saw(&self, entry: kv::Entry) {
        let now = Instant::now();
        let put = entry.operation == kv::Operation::Put;
        let mut state = self.state();
        if let Some(project) = entry.key.strip_prefix(PROJECT_KEY) {
            if put {
                let holder = String::from_utf8_lossy(&entry.value).into_owned();
                state.holders.insert(
                    project.to_string(),
                    Seen {
                        holder,
                        revision: entry.revision,
                        at: now,
                    },
                );
            } else {
                state.holders.remove(project);
                drop(state);
                // Released: the preferred instance takes it now, not at its next tick.
                self.wake.notify_one();
            }
        } else if let Some(instance) = entry.key.strip_prefix(INSTANCE_KEY) {
            if put {
                let first = state
                    .instances
                    .get(instance)
                    .map_or(now, |(first, _)| *first);
                state.instances.insert(instance.to_string(), (first, now));
            } else {
                state.instances.remove(instance);
            }
        }
    }

    /// Announces this instance and renews its leases; a renewal refused means another
    /// instance took the lease, and this one is no longer the writer.
    async fn renew(&self) {
        let presence = format!("{INSTANCE_KEY}{}", self.instance);
        if let Err(e) = self.kv.put(&presence, Vec::new().into()).await {
            tracing::debug!("presence not renewed: {e}");
        }
        let mine: Vec<(String, u64)> = self
            .state()
            .mine
            .iter()
            .map(|(p, h)| (p.clone(), h.revision))
            .collect();
        for (project, revision) in mine {
            let key = format!("{PROJECT_KEY}{project}");
            let renewed = self
                .kv
                .update(&key, self.instance.clone().into(), revision)
                .await;
            let mut state = self.state();
            match renewed {
                Ok(revision) => {
                    if let Some(held) = state.mine.get_mut(&project) {
                        held.revision = revision;
                        held.renewed = Instant::now();
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    state.mine.remove(&project);
                    tracing::warn!(project, "writer lease lost to another instance");
                }
                // Not reachable now: the lease lapses by itself if this lasts.
                Err(e) => tracing::debug!(project, "lease not renewed: {e}"),
            }
        }
    }

    /// Takes vacant leases this instance is preferred for (or that stayed vacant a lease
    /// time), and hands over those another live instance is preferred for.
    async fn balance(&self, projects: &[String]) {
        let now = Instant::now();
        let (take, hand_over) = {
            let mut state = self.state();
            if state.leaving {
                return;
            }
            let alive: Vec<&str> = state
                .instances
                .iter()
                .filter(|(_, (_, last))| now.duration_since(*last) < self.ttl)
                .map(|(id, _)| id.as_str())
                .chain(std::iter::once(self.instance.as_str()))
                .collect();
            let settled: Vec<&str> = state
                .instances
                .iter()
                .filter(|(_, (first, last))| {
                    now.duration_since(*last) < self.ttl
                        && now.duration_since(*first) > self.ttl * 2
                })
                .map(|(id, _)| id.as_str())
                .collect();
            let mut take = Vec::new();
            let mut hand_over = Vec::new();
            let mut vacant = Vec::new();
            for project in projects {
                let preferred = preferred(project, &alive);
                if let Some(held) = state.mine.get(project) {
                    if preferred != self.instance
                        && settled.contains(&preferred)
                        && now.duration_since(held.taken) > self.ttl * 2
                    {
                        hand_over.push((project.clone(), held.revision));
                    }
                    continue;
                }
                // A lease not renewed for a lease time has lapsed, whether or not the
                // bucket has dropped its key yet (its age limit is checked lazily).
                let stale = match state.holders.get(project) {
                    None => Some(None),
                    Some(seen) if now.duration_since(seen.at) >= self.ttl => {
                        Some(Some((seen.holder.clone(), seen.revision)))
                    }
                    Some(_) => None,
                };
                if let Some(stale) = stale {
                    vacant.push((project.clone(), preferred == self.instance, stale));
                }
            }
            state
                .vacant_since
                .retain(|p, _| vacant.iter().any(|(v, _, _)| v == p));
            for (project, preferred, stale) in vacant {
                let since = *state.vacant_since.entry(project.clone()).or_insert(now);
                if preferred || now.duration_since(since) >= self.ttl {
                    take.push((project, stale));
                }
            }
            (take, hand_over)
        };
        for (project, stale) in take {
            match stale {
                Some((holder, revision)) => self.take_from(&project, &holder, revision).await,
                None => self.acquire(&project).await,
            };
        }
        for (project, revision) in hand_over {
            self.release(&project, revision).await;
            tracing::info!(
                project,
                "writer lease handed over to the preferred instance"
            );
        }
    }

    async fn release(&self, project: &str, revision: u64) {
        self.state().mine.remove(project);
        let key = format!("{PROJECT_KEY}{project}");
        if let Err(e) = self.kv.delete_expect_revision(&key, Some(revision)).await {
            tracing::debug!(project, "lease not released: {e}");
        }
    }

    /// Gives up every lease and the presence key (on shutdown).
    pub async fn release_all(&self) {
        let mine: Vec<(String, u64)> = {
            let mut state = self.state();
            state.leaving = true;
            state
                .mine
                .iter()
                .map(|(p, h)| (p.clone(), h.revision))
                .collect()
        };
        for (project, revision) in mine {
            self.release(&project, revision).await;
            tracing::info!(project, "writer lease released");
        }
        let presence = format!("{INSTANCE_KEY}{}", self.instance);
        let _ = self.kv.delete(&presence).await;
    }
}

/// The instance rendezvous hashing prefers for `project` among `alive`: every instance
/// computes the same answer from the same list, and a change of the list moves only the
/// projects of the instance that came or went.
pub fn preferred<'a>(project: &str, alive: &[&'a str]) -> &'a str {
    alive
        .iter()
        .copied()
        .max_by_key(|instance| {
            let name = format!("{instance}/{project}");
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).as_u128()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::preferred;

    #[test]
    fn projects_spread_over_instances_and_move_only_when_theirs_goes() {
        let three = ["weft-a", "weft-b", "weft-c"];
        let projects: Vec<String> = (0..300).map(|i| format!("project-{i}")).collect();
        let before: Vec<&str> = projects.iter().map(|p| preferred(p, &three)).collect();
        for instance in three {
            let count = before.iter().filter(|&&i| i == instance).count();
            assert!((60..=140).contains(&count), "{instance} got {count} of 300");
        }
        // weft-c goes: only its projects move.
        let two = ["weft-a", "weft-b"];
        for (project, was) in projects.iter().zip(&before) {
            let now = preferred(project, &two);
            if *was != "weft-c" {
                assert_eq!(now, *was, "{project} moved though its instance stayed");
            }
        }
        // Order of the list does not matter.
        let shuffled = ["weft-c", "weft-a", "weft-b"];
        for (project, was) in projects.iter().zip(&before) {
            assert_eq!(preferred(project, &shuffled), *was);
        }
    }
}
