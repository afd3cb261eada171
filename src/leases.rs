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
    book: Mutex<Book>,
    /// Wakes the renewal loop early: a lease was released.
    wake: Notify,
}

/// What this instance knows of the leases, and the rules on it: pure, given `now`.
struct Book {
    me: String,
    ttl: Duration,
    /// Leases as last seen in the bucket, by project.
    holders: HashMap<String, Seen>,
    /// Instances alive, by id: when first and last seen.
    instances: HashMap<String, (Instant, Instant)>,
    /// The leases this instance holds.
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
    /// When the last renewal that succeeded was sent (the bucket counts its age from a
    /// moment after that).
    renewed: Instant,
    taken: Instant,
}

/// What the renewal loop is to do about other leases.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Vacant leases to take, with the stale holder and revision where one is left.
    take: Vec<(String, Option<(String, u64)>)>,
    /// Leases to give to the instance preferred for them, with their revision.
    hand_over: Vec<(String, u64)>,
}

impl Book {
    fn new(me: String, ttl: Duration) -> Self {
        Book {
            me,
            ttl,
            holders: HashMap::new(),
            instances: HashMap::new(),
            mine: HashMap::new(),
            vacant_since: HashMap::new(),
            leaving: false,
        }
    }

    /// A lease counts as held until a little before it would lapse in the bucket, so this
    /// instance stops writing before another may start.
    fn held_for(&self) -> Duration {
        self.ttl.mul_f64(0.8)
    }

    fn role(&self, project: &str, now: Instant) -> Role {
        if let Some(held) = self.mine.get(project) {
            if now.duration_since(held.renewed) < self.held_for() {
                return Role::Writer;
            }
        }
        match self.holders.get(project) {
            Some(seen) if seen.holder != self.me && now.duration_since(seen.at) < self.ttl => {
                Role::Standby {
                    holder: seen.holder.clone(),
                    revision: seen.revision,
                }
            }
            _ => Role::Vacant,
        }
    }

    fn held(&self, now: Instant) -> Vec<String> {
        let mut held: Vec<String> = self
            .mine
            .iter()
            .filter(|(_, h)| now.duration_since(h.renewed) < self.held_for())
            .map(|(p, _)| p.clone())
            .collect();
        held.sort();
        held
    }

    fn took(&mut self, project: &str, revision: u64, sent: Instant) {
        self.mine.insert(
            project.to_string(),
            Held {
                revision,
                renewed: sent,
                taken: sent,
            },
        );
        self.vacant_since.remove(project);
    }

    /// Records an entry of the bucket; true when it released a lease.
    fn saw(&mut self, key: &str, value: &[u8], revision: u64, put: bool, now: Instant) -> bool {
        if let Some(project) = key.strip_prefix(PROJECT_KEY) {
            if put {
                let holder = String::from_utf8_lossy(value).into_owned();
                let seen = Seen {
                    holder,
                    revision,
                    at: now,
                };
                self.holders.insert(project.to_string(), seen);
            } else {
                self.holders.remove(project);
                return true;
            }
        } else if let Some(instance) = key.strip_prefix(INSTANCE_KEY) {
            if put {
                let first = self
                    .instances
                    .get(instance)
                    .map_or(now, |(first, _)| *first);
                self.instances.insert(instance.to_string(), (first, now));
            } else {
                self.instances.remove(instance);
            }
        }
        false
    }

    /// Takes vacant leases this instance is preferred for (or that stayed vacant a lease
    /// time), and hands over those another live instance is preferred for once it has
    /// been up two lease times (and this one held them as long).
    fn plan(&mut self, projects: &[String], now: Instant) -> Plan {
        let mut plan = Plan::default();
        if self.leaving {
            return plan;
        }
        let ttl = self.ttl;
        let alive: Vec<&str> = self
            .instances
            .iter()
            .filter(|(_, (_, last))| now.duration_since(*last) < ttl)
            .map(|(id, _)| id.as_str())
            .chain(std::iter::once(self.me.as_str()))
            .collect();
        let settled = |id: &str| {
            self.instances.get(id).is_some_and(|(first, last)| {
                now.duration_since(*last) < ttl && now.duration_since(*first) > ttl * 2
            })
        };
        let mut vacant = Vec::new();
        for project in projects {
            let preferred = preferred(project, &alive);
            if let Some(held) = self.mine.get(project) {
                if preferred != self.me
                    && settled(preferred)
                    && now.duration_since(held.taken) > ttl * 2
                {
                    plan.hand_over.push((project.clone(), held.revision));
                }
                continue;
            }
            // A lease not renewed for a lease time has lapsed, whether or not the bucket
            // has dropped its key yet (its age limit is applied lazily).
            let stale = match self.holders.get(project) {
                None => Some(None),
                Some(seen) if now.duration_since(seen.at) >= ttl => {
                    Some(Some((seen.holder.clone(), seen.revision)))
                }
                Some(_) => None,
            };
            if let Some(stale) = stale {
                vacant.push((project.clone(), preferred == self.me, stale));
            }
        }
        self.vacant_since
            .retain(|p, _| vacant.iter().any(|(v, _, _)| v == p));
        for (project, preferred, stale) in vacant {
            let since = *self.vacant_since.entry(project.clone()).or_insert(now);
            if preferred || now.duration_since(since) >= ttl {
                plan.take.push((project, stale));
            }
        }
        plan
    }
}

impl Leases {
    pub fn new(kv: kv::Store, instance: String, ttl: Duration) -> Arc<Self> {
        Arc::new(Leases {
            kv,
            book: Mutex::new(Book::new(instance, ttl)),
            wake: Notify::new(),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn me(&self) -> String {
        self.book().me.clone()
    }

    pub fn role(&self, project: &str) -> Role {
        self.book().role(project, Instant::now())
    }

    pub fn holds(&self, project: &str) -> bool {
        self.role(project) == Role::Writer
    }

    /// The projects this instance writes for, sorted.
    pub fn held(&self) -> Vec<String> {
        self.book().held(Instant::now())
    }

    /// Takes the project's lease if it is vacant; true when this instance holds it now.
    pub async fn acquire(&self, project: &str) -> bool {
        let (me, leaving) = {
            let book = self.book();
            (book.me.clone(), book.leaving)
        };
        if leaving {
            return false;
        }
        let key = format!("{PROJECT_KEY}{project}");
        let sent = Instant::now();
        match self.kv.create(&key, me.into()).await {
            Ok(revision) => {
                self.book().took(project, revision, sent);
                tracing::info!(project, "writer lease taken");
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
        let tick = (self.book().ttl / 5).max(Duration::from_millis(100));
        loop {
            self.renew().await;
            let plan = self.book().plan(&projects(), Instant::now());
            for (project, stale) in plan.take {
                match stale {
                    Some((holder, revision)) => self.take_from(&project, &holder, revision).await,
                    None => self.acquire(&project).await,
                };
            }
            for (project, revision) in plan.hand_over {
                self.release(&project, revision).await;
                tracing::info!(
                    project,
                    "writer lease handed over to the preferred instance"
                );
            }
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
    async fn watch(self: Arc<Self>, done: CancellationToken) {
        while !done.is_cancelled() {
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
                    _ = done.cancelled() => return,
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
        let put = entry.operation == kv::Operation::Put;
        let released = self.book().saw(
            &entry.key,
            &entry.value,
            entry.revision,
            put,
            Instant::now(),
        );
        if released {
            // The preferred instance takes it now, not at its next tick.
            self.wake.notify_one();
        }
    }

    /// Announces this instance and renews its leases; a renewal refused means another
    /// instance took the lease, and this one is no longer the writer.
    async fn renew(&self) {
        let me = self.me();
        let presence = format!("{INSTANCE_KEY}{me}");
        if let Err(e) = self.kv.put(&presence, Vec::new().into()).await {
            tracing::debug!("presence not renewed: {e}");
        }
        let mine: Vec<(String, u64)> = self
            .book()
            .mine
            .iter()
            .map(|(p, h)| (p.clone(), h.revision))
            .collect();
        for (project, revision) in mine {
            let key = format!("{PROJECT_KEY}{project}");
            let sent = Instant::now();
            let renewed = self.kv.update(&key, me.clone().into(), revision).await;
            let mut book = self.book();
            match renewed {
                Ok(revision) => {
                    if let Some(held) = book.mine.get_mut(&project) {
                        held.revision = revision;
                        held.renewed = sent;
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    book.mine.remove(&project);
                    tracing::warn!(project, "writer lease lost to another instance");
                }
                // Not reachable now: the lease lapses by itself if this lasts.
                Err(e) => tracing::debug!(project, "lease not renewed: {e}"),
            }
        }
    }

    async fn release(&self, project: &str, revision: u64) {
        self.book().mine.remove(project);
        let key = format!("{PROJECT_KEY}{project}");
        if let Err(e) = self.kv.delete_expect_revision(&key, Some(revision)).await {
            tracing::debug!(project, "lease not released: {e}");
        }
    }

    /// Gives up every lease and the presence key (on shutdown).
    pub async fn release_all(&self) {
        let (me, mine) = {
            let mut book = self.book();
            book.leaving = true;
            let mine: Vec<(String, u64)> = book
                .mine
                .iter()
                .map(|(p, h)| (p.clone(), h.revision))
                .collect();
            (book.me.clone(), mine)
        };
        for (project, revision) in mine {
            self.release(&project, revision).await;
            tracing::info!(project, "writer lease released");
        }
        let _ = self.kv.delete(format!("{INSTANCE_KEY}{me}")).await;
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
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A book for `me`, knowing `others` alive since `t0`.
    fn book(me: &str, others: &[&str], t0: Instant) -> Book {
        let mut book = Book::new(me.into(), TTL);
        for other in others {
            book.saw(&format!("{INSTANCE_KEY}{other}"), b"", 1, true, t0);
        }
        book
    }

    fn projects(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// A project `me` is preferred for, and one it is not, among `me` and `other`.
    fn split(me: &str, other: &str) -> (String, String) {
        let alive = [me, other];
        let mine = (0..)
            .map(|i| format!("p{i}"))
            .find(|p| preferred(p, &alive) == me);
        let theirs = (0..)
            .map(|i| format!("p{i}"))
            .find(|p| preferred(p, &alive) == other);
        (mine.expect("one"), theirs.expect("one"))
    }

    #[test]
    fn a_held_lease_makes_the_writer_until_shortly_before_it_would_lapse() {
        let t0 = Instant::now();
        let mut book = book("a", &[], t0);
        book.took("p", 7, t0);
        assert_eq!(book.role("p", t0 + secs(3.9)), Role::Writer);
        assert_eq!(book.held(t0 + secs(3.9)), ["p"]);
        // 0.8 of the lease: it stops writing before anyone may take over.
        assert_eq!(book.role("p", t0 + secs(4.1)), Role::Vacant);
        assert!(book.held(t0 + secs(4.1)).is_empty());
    }

    #[test]
    fn another_holder_makes_a_standby_until_its_lease_lapses() {
        let t0 = Instant::now();
        let mut book = book("a", &["b"], t0);
        book.saw("project.p", b"b", 9, true, t0);
        let standby = Role::Standby {
            holder: "b".into(),
            revision: 9,
        };
        assert_eq!(book.role("p", t0 + secs(4.9)), standby);
        assert_eq!(book.role("p", t0 + secs(5.0)), Role::Vacant);
        // Released: vacant at once.
        assert!(book.saw("project.p", b"", 10, false, t0 + secs(1.0)));
        assert_eq!(book.role("p", t0 + secs(1.0)), Role::Vacant);
    }

    #[test]
    fn a_lapsed_lease_is_taken_by_the_preferred_instance_at_once_by_others_a_lease_later() {
        let t0 = Instant::now();
        let (for_a, for_b) = split("a", "b");
        let mut a = book("a", &["b"], t0);
        a.saw(&format!("project.{for_a}"), b"c", 3, true, t0);
        a.saw(&format!("project.{for_b}"), b"c", 4, true, t0);
        let all = projects(&[&for_a, &for_b]);
        // Renewed a moment ago: nothing to take.
        assert_eq!(a.plan(&all, t0 + secs(1.0)), Plan::default());
        // b stays alive (it renews its presence); c's leases lapse.
        a.saw("instance.b", b"", 5, true, t0 + secs(5.0));
        let plan = a.plan(&all, t0 + secs(5.0));
        assert_eq!(plan.take, vec![(for_a.clone(), Some(("c".into(), 3)))]);
        // b is preferred for the other; if it has not taken it a lease later, a does.
        a.saw("instance.b", b"", 6, true, t0 + secs(9.0));
        let later = a.plan(&all, t0 + secs(10.1));
        assert!(later.take.iter().any(|(p, _)| *p == for_b), "{later:?}");
    }

    #[test]
    fn a_project_never_recorded_as_held_is_taken_by_its_preferred_instance() {
        let t0 = Instant::now();
        let (for_a, for_b) = split("a", "b");
        let mut a = book("a", &["b"], t0);
        let plan = a.plan(&projects(&[&for_a, &for_b]), t0);
        assert_eq!(plan.take, vec![(for_a, None)]);
    }

    #[test]
    fn leases_go_to_the_preferred_instance_once_it_has_been_up_two_lease_times() {
        let t0 = Instant::now();
        let (_, for_b) = split("a", "b");
        let mut a = book("a", &[], t0);
        a.took(&for_b, 11, t0);
        let all = projects(&[&for_b]);
        // b comes up at t0 + 1 s, and keeps its presence.
        for t in [1.0, 4.0, 7.0, 10.0] {
            a.saw("instance.b", b"", 1, true, t0 + secs(t));
        }
        // Not before b has been up for two lease times.
        assert!(a.plan(&all, t0 + secs(10.5)).hand_over.is_empty());
        assert_eq!(
            a.plan(&all, t0 + secs(11.5)).hand_over,
            vec![(for_b.clone(), 11)]
        );
        // A lease taken a moment ago is not handed on at once.
        let mut fresh = book("a", &[], t0);
        fresh.saw("instance.b", b"", 1, true, t0 + secs(1.0));
        fresh.took(&for_b, 12, t0 + secs(10.0));
        fresh.saw("instance.b", b"", 2, true, t0 + secs(11.0));
        assert!(fresh.plan(&all, t0 + secs(11.5)).hand_over.is_empty());
    }

    #[test]
    fn an_instance_that_is_leaving_takes_nothing() {
        let t0 = Instant::now();
        let mut a = book("a", &[], t0);
        a.leaving = true;
        assert_eq!(a.plan(&projects(&["p"]), t0), Plan::default());
    }

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
