//! The log as evidence. `weft audit verify` rebuilds every projection from the first event
//! and checks the log and what was derived from it: sequences without gaps, every event
//! readable (through the upcasters), the stored snapshot equal to the replay at its
//! sequence, and a running instance's state equal to the replay at its sequence.
//! `weft events export` writes the decoded log as JSON lines; `weft events import` replays
//! such a file into an empty log, in order, so a history moves to a new cluster whole.

use std::time::Duration;

use projections::State;

use crate::store::EventStore;

/// One line of the report: what was checked, and whether it held.
pub struct Check {
    pub what: String,
    pub ok: bool,
}

pub struct Report {
    pub checks: Vec<Check>,
    pub events: u64,
    pub sequence: u64,
    pub digest: String,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn check(&mut self, ok: bool, what: String) {
        self.checks.push(Check { what, ok });
    }
}

/// The outcome of the last background verification (`WEFT_AUDIT_INTERVAL_MS`), as
/// `/health` and `/metrics` show it.
#[derive(Clone, Debug)]
pub struct LastAudit {
    pub finished_ms: u64,
    /// Sequence the replay reached.
    pub sequence: u64,
    pub checks: usize,
    /// What did not hold; empty when all did.
    pub failed: Vec<String>,
}

/// The last verification's outcome (`None`: none has finished yet).
pub type Audits = std::sync::Arc<std::sync::Mutex<Option<LastAudit>>>;

/// Runs [`verify_store`] every `interval`, comparing with this instance's live state,
/// and keeps the outcome in `last` (a failure is also logged as an error).
pub async fn run_every(
    store: EventStore,
    live: std::sync::Arc<crate::projector::Projection>,
    interval: Duration,
    last: Audits,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = live.read(|s| Live {
            sequence: s.sequence,
            digest: s.digest(),
        });
        match verify_store(&store, Some(now), |_| indicatif::ProgressBar::hidden()).await {
            Ok(report) => {
                let failed: Vec<String> = report
                    .checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| c.what.clone())
                    .collect();
                if failed.is_empty() {
                    tracing::info!(sequence = report.sequence, "audit: the log verifies");
                } else {
                    tracing::error!(
                        sequence = report.sequence,
                        ?failed,
                        "audit: the log does not verify"
                    );
                }
                *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastAudit {
                    finished_ms: crate::time::now_ms(),
                    sequence: report.sequence,
                    checks: report.checks.len(),
                    failed,
                });
            }
            Err(e) => tracing::warn!("audit could not run: {e}"),
        }
    }
}

/// A running instance's state, as `GET /api/state` gives it.
#[derive(serde::Deserialize)]
pub struct Live {
    pub sequence: u64,
    pub digest: String,
}

/// Verifies the log at `nats_url` (a server or a comma-separated list); with `api_url`,
/// also the state of the Weft answering there.
pub async fn verify(
    nats_url: &str,
    api_url: Option<&str>,
    token: Option<&str>,
) -> Result<Report, String> {
    let store = EventStore::new(crate::nats::connect_once(nats_url).await?);
    // Asked first, so the replay passes the live instance's sequence.
    let live = match api_url {
        Some(url) => Some(live_state(url, token).await?),
        None => None,
    };
    verify_store(&store, live, bar).await
}

/// The checks of [`verify`] on `store`; `live` is a state to compare with the replay at its
/// sequence; `progress` makes the bar for the replay (hidden in the background).
pub async fn verify_store(
    store: &EventStore,
    live: Option<Live>,
    progress: fn(u64) -> indicatif::ProgressBar,
) -> Result<Report, String> {
    let mut snapshots = Vec::new();
    for at in store
        .snapshot_sequences()
        .await
        .map_err(|e| e.to_string())?
    {
        let bytes = store
            .load_snapshot_at_or_before(at)
            .await
            .map_err(|e| e.to_string())?
            .filter(|(found, _)| *found == at)
            .map(|(_, bytes)| bytes);
        snapshots.push((at, bytes));
    }
    let head = store.last_sequence().await.map_err(|e| e.to_string())?;
    let progress = progress(head);
    let mut state = State::default();
    let mut report = Report {
        checks: Vec::new(),
        events: 0,
        sequence: 0,
        digest: String::new(),
    };
    let mut gaps = Vec::new();
    let mut unreadable = Vec::new();
    // Events Weft did not write: on a subject their envelope does not name, or a copy of
    // an event already in the log.
    let mut misplaced = Vec::new();
    let mut ids = std::collections::HashMap::new();
    let mut repeated = Vec::new();
    let mut digests_at: Vec<(u64, Option<String>)> = snapshots
        .iter()
        .map(|(at, _)| (*at, None))
        .chain(live.iter().map(|l| (l.sequence, None)))
        .collect();
    let filter = events::subject::ALL;
    let mut after = 0;
    loop {
        let (page, more) = store
            .read_raw(after, &[filter.to_string()], 10_000)
            .await
            .map_err(|e| e.to_string())?;
        for raw in &page {
            let sequence = &raw.sequence;
            if *sequence != after + 1 {
                gaps.push((after + 1, sequence - 1));
            }
            match migrations::decode(&raw.payload) {
                Ok(envelope) => {
                    let named = events::subject::aggregate(
                        &envelope.project,
                        envelope.aggregate,
                        &envelope.aggregate_id,
                    );
                    if named != raw.subject {
                        misplaced.push(format!("{sequence} (on {}, names {named})", raw.subject));
                    }
                    if let Some(first) = ids.insert(envelope.id.clone(), *sequence) {
                        repeated.push(format!("{sequence} (id {} first at {first})", envelope.id));
                    }
                    state.apply(*sequence, &envelope);
                }
                Err(e) => {
                    state.skip(*sequence);
                    unreadable.push(format!("{sequence}: {e}"));
                }
            }
            after = *sequence;
            report.events += 1;
            for (at, digest) in &mut digests_at {
                if *at == *sequence {
                    *digest = Some(state.digest());
                }
            }
        }
        progress.set_position(after);
        if more == 0 || page.is_empty() {
            break;
        }
    }
    progress.finish_and_clear();
    for (at, digest) in &mut digests_at {
        if *at == 0 {
            *digest = Some(State::default().digest());
        }
    }
    report.sequence = after;
    report.digest = state.digest();
    report.check(
        gaps.is_empty(),
        match gaps.as_slice() {
            [] => format!("sequences 1..{after} without gaps"),
            gaps => format!("sequences missing: {gaps:?}"),
        },
    );
    report.check(
        unreadable.is_empty(),
        match unreadable.len() {
            0 => format!("{} events readable by this binary", report.events),
            n => format!("{n} events unreadable: {}", unreadable.join("; ")),
        },
    );
    report.check(
        misplaced.is_empty(),
        match misplaced.len() {
            0 => "every event on the subject its envelope names".into(),
            n => format!(
                "{n} events on a subject their envelope does not name: {}",
                misplaced.join("; ")
            ),
        },
    );
    report.check(
        repeated.is_empty(),
        match repeated.len() {
            0 => "every event id once".into(),
            n => format!("{n} events repeat an earlier id: {}", repeated.join("; ")),
        },
    );
    let replayed_at = |at: u64| {
        digests_at
            .iter()
            .find(|(s, _)| *s == at)
            .and_then(|(_, d)| d.clone())
    };
    if snapshots.is_empty() {
        report.check(true, "no snapshot stored".into());
    }
    for (at, bytes) in &snapshots {
        let stored = bytes
            .as_deref()
            .and_then(State::from_snapshot)
            .map(|s| s.digest());
        let ok = stored.is_some() && stored == replayed_at(*at);
        let what = match (&stored, ok) {
            (None, _) => format!("snapshot at {at}: not readable (checksum, chunks or format)"),
            (_, true) => format!("snapshot at {at}: equal to the replay"),
            (_, false) => format!("snapshot at {at}: DIFFERS from the replay"),
        };
        report.check(ok, what);
    }
    if let Some(live) = live {
        let ok = replayed_at(live.sequence).as_deref() == Some(live.digest.as_str());
        let what = if ok {
            format!("live state at {}: equal to the replay", live.sequence)
        } else {
            format!("live state at {}: DIFFERS from the replay", live.sequence)
        };
        report.check(ok, what);
    }
    Ok(report)
}

async fn live_state(api_url: &str, token: Option<&str>) -> Result<Live, String> {
    crate::mechanism::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = http.get(format!("{}/api/state", api_url.trim_end_matches('/')));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach Weft at {api_url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET /api/state answered {}", response.status()));
    }
    response
        .json()
        .await
        .map_err(|e| format!("unreadable /api/state: {e}"))
}

/// One line of an export: an event and its place in the log it came from.
#[derive(serde::Serialize, serde::Deserialize)]
struct Exported {
    sequence: u64,
    envelope: events::Envelope,
}

fn bar(len: u64) -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new(len);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress
}

/// Writes the events after `after` (of `project`, or all) to `out`, one JSON line each,
/// decoded through the upcasters; the number written.
pub async fn export(
    nats_url: &str,
    after: u64,
    project: Option<&str>,
    out: &mut impl std::io::Write,
) -> Result<u64, String> {
    let store = EventStore::new(crate::nats::connect_once(nats_url).await?);
    let filter = match project {
        Some(p) => events::subject::filter(Some(p), None, None),
        None => events::subject::ALL.to_string(),
    };
    let progress = bar(store.last_sequence().await.map_err(|e| e.to_string())?);
    let (mut after, mut written) = (after, 0);
    loop {
        let (page, more) = store
            .read(after, &filter, 10_000)
            .await
            .map_err(|e| e.to_string())?;
        for (sequence, bytes) in &page {
            let envelope = migrations::decode(bytes)
                .map_err(|e| format!("event {sequence} is not readable by this binary: {e}"))?;
            let line = serde_json::to_string(&Exported {
                sequence: *sequence,
                envelope,
            })
            .map_err(|e| e.to_string())?;
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            after = *sequence;
            written += 1;
        }
        progress.set_position(after);
        if more == 0 || page.is_empty() {
            break;
        }
    }
    progress.finish_and_clear();
    out.flush().map_err(|e| e.to_string())?;
    Ok(written)
}

/// Appends every event of an export, in order, to an empty log (migrated first); the
/// number imported. Each append expects the log's previous sequence, so nothing else can
/// interleave; an export of a whole log keeps its sequences.
/// Appends an import keeps unanswered at once.
const IMPORT_IN_FLIGHT: usize = 512;

async fn settle(
    next: Option<(usize, async_nats::jetstream::context::PublishAckFuture)>,
    progress: &indicatif::ProgressBar,
) -> Result<(), String> {
    if let Some((line, ack)) = next {
        ack.await
            .map_err(|err| format!("line {line}: not stored: {err}"))?;
        progress.inc(1);
    }
    Ok(())
}

pub async fn import(nats_url: &str, input: impl std::io::BufRead) -> Result<u64, String> {
    let client = crate::nats::connect_once(nats_url).await?;
    migrations::apply(
        &client,
        "weft events import",
        &migrations::Topology::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let store = EventStore::new(client.clone());
    let head = store.last_sequence().await.map_err(|e| e.to_string())?;
    if head != 0 {
        return Err(format!(
            "the log already holds {head} events: import needs an empty one"
        ));
    }
    let js = async_nats::jetstream::new(client);
    let progress = bar(0);
    let mut imported = 0u64;
    let mut source_sequence = 0u64;
    let mut gaps = Vec::new();
    // Each append expects the one before it, so order is checked by the server while many
    // are in flight on the one connection (which keeps them in order).
    let mut in_flight = std::collections::VecDeque::new();
    for (number, line) in input.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let exported: Exported = serde_json::from_str(&line)
            .map_err(|e| format!("line {}: not an exported event: {e}", number + 1))?;
        if exported.sequence != source_sequence + 1 && source_sequence > 0 {
            gaps.push((source_sequence + 1, exported.sequence.saturating_sub(1)));
        }
        source_sequence = exported.sequence;
        let e = &exported.envelope;
        let subject = events::subject::aggregate(&e.project, e.aggregate, &e.aggregate_id);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Expected-Last-Sequence", imported.to_string().as_str());
        let ack = js
            .publish_with_headers(subject, headers, e.encode().into())
            .await
            .map_err(|err| format!("line {}: {err}", number + 1))?;
        in_flight.push_back((number + 1, ack));
        imported += 1;
        if in_flight.len() >= IMPORT_IN_FLIGHT {
            settle(in_flight.pop_front(), &progress).await?;
        }
    }
    while !in_flight.is_empty() {
        settle(in_flight.pop_front(), &progress).await?;
    }
    if !gaps.is_empty() {
        // The log cannot skip sequences: the events after a gap take the next ones.
        eprintln!(
            "the source log has gaps at {gaps:?}; the events after them were imported at the next sequences, so digests and sequences after the first gap differ from the source's"
        );
    }
    progress.finish_and_clear();
    Ok(imported)
}
