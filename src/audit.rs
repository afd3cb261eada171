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

/// A running instance's state, as `GET /api/state` gives it.
#[derive(serde::Deserialize)]
struct Live {
    sequence: u64,
    digest: String,
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
    let snapshot = store.load_snapshot().await.map_err(|e| e.to_string())?;
    let head = store.last_sequence().await.map_err(|e| e.to_string())?;

    let progress = indicatif::ProgressBar::new(head);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut state = State::default();
    let mut report = Report {
        checks: Vec::new(),
        events: 0,
        sequence: 0,
        digest: String::new(),
    };
    let mut gaps = Vec::new();
    let mut unreadable = Vec::new();
    let mut digests_at: Vec<(u64, Option<String>)> = snapshot
        .iter()
        .map(|(at, _)| (*at, None))
        .chain(live.iter().map(|l| (l.sequence, None)))
        .collect();
    let filter = events::subject::ALL;
    let mut after = 0;
    loop {
        let (page, more) = store
            .read(after, filter, 10_000)
            .await
            .map_err(|e| e.to_string())?;
        for (sequence, bytes) in &page {
            if *sequence != after + 1 {
                gaps.push((after + 1, sequence - 1));
            }
            match migrations::decode(bytes) {
                Ok(envelope) => {
                    state.apply(*sequence, &envelope);
                }
                Err(e) => unreadable.push(format!("{sequence}: {e}")),
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
    let replayed_at = |at: u64| {
        digests_at
            .iter()
            .find(|(s, _)| *s == at)
            .and_then(|(_, d)| d.clone())
    };
    match &snapshot {
        None => report.check(true, "no snapshot stored".into()),
        Some((at, bytes)) => {
            let stored = State::from_snapshot(bytes).map(|s| s.digest());
            let ok = stored.is_some() && stored == replayed_at(*at);
            let what = match (&stored, ok) {
                (None, _) => format!("snapshot at {at}: not readable by this binary"),
                (_, true) => format!("snapshot at {at}: equal to the replay"),
                (_, false) => format!("snapshot at {at}: DIFFERS from the replay"),
            };
            report.check(ok, what);
        }
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
    for (number, line) in input.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let exported: Exported = serde_json::from_str(&line)
            .map_err(|e| format!("line {}: not an exported event: {e}", number + 1))?;
        let e = &exported.envelope;
        let subject = events::subject::aggregate(&e.project, e.aggregate, &e.aggregate_id);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Expected-Last-Sequence", imported.to_string().as_str());
        js.publish_with_headers(subject, headers, e.encode().into())
            .await
            .map_err(|err| format!("line {}: {err}", number + 1))?
            .await
            .map_err(|err| format!("line {}: not stored: {err}", number + 1))?;
        imported += 1;
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(imported)
}
