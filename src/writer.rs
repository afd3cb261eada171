//! A project's writer: the one task that decides and records the project's commands.
//!
//! Commands queue up; the writer takes whatever has queued as a round, decides each
//! command in turn against the state the commands before it leave, and sends the round's
//! events to the log. It does not wait for the log's answer before deciding the next
//! round: it decides against the committed state plus every round still in flight (a copy:
//! the state's collections are persistent, so copying is cheap). Rounds are stored in the
//! order they were sent. When a round's answer comes, its events are folded into the
//! projection and only then are its callers answered, so a client reads its own write.
//!
//! The log itself guards against a second writer: the writer first catches up with the
//! project's events and records its election expecting the project's newest event to be
//! the one it caught up to (so nothing another writer recorded is missed), and every
//! later append expects the project's writer subject to still be at that election. If
//! another instance was elected since, the log refuses the append; the writer lets every
//! round in flight settle and, if it still holds the project's lease ([`crate::leases`]),
//! catches up, is elected again and decides the refused commands again; if not, it hands
//! them back (`NotWriter`) for the caller to send to the project's writer. When the log does not answer, the writer cannot know
//! whether the commands landed: it is elected again (which fences off anything still on
//! its way), looks for the commands' events in the log, and decides again only those that
//! are not there.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use decide::{Command, Rejection, Settings};
use events::{Envelope, Event, SCHEMA_VERSION};
use projections::Project;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::commands::{CommandContext, CommandError, Recorded};
use crate::leases::Leases;
use crate::projector::Projection;
use crate::store::{CommitMode, EventStore, Fence, Outcome, MAX_BATCH};

/// The most commands decided in one round; the rest wait for the next.
const MAX_ROUND: usize = 1000;
/// How many times a command is decided again after the log refused its events.
const MAX_ATTEMPTS: u32 = 10;
/// How long a writer waits for the projection to fold in the log before deciding.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// A command waiting for its round.
pub struct Request {
    pub ctx: CommandContext,
    pub command: Command,
    pub reply: oneshot::Sender<Result<Vec<Recorded>, CommandError>>,
    /// Rounds this command was decided in whose commit did not take it.
    attempts: u32,
    /// Events of an earlier round that were sent without an answer: they may be in the log.
    sent: Option<Unanswered>,
}

/// A command's events that went to the log without an answer.
struct Unanswered {
    /// The log's sequence before they were decided: if they landed, it is after this.
    after: u64,
    events: Vec<Envelope>,
}

impl Request {
    pub fn new(
        ctx: CommandContext,
        command: Command,
        reply: oneshot::Sender<Result<Vec<Recorded>, CommandError>>,
    ) -> Self {
        Request {
            ctx,
            command,
            reply,
            attempts: 0,
            sent: None,
        }
    }

    fn answer(self, result: Result<Vec<Recorded>, CommandError>) {
        // The caller may have gone away (a closed connection); nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// What a project's writer needs from the process.
pub struct Shared {
    pub store: EventStore,
    pub projection: Arc<Projection>,
    pub settings: Arc<Settings>,
    /// This instance's id, recorded in its elections.
    pub instance: String,
    pub mode: CommitMode,
    /// Who writes for which project; `None`: this instance alone writes to the log.
    pub leases: Option<Arc<Leases>>,
}

impl Shared {
    fn is_writer(&self, project: &str) -> bool {
        self.leases.as_ref().is_none_or(|l| l.holds(project))
    }
}

/// Runs a project's writer until every sender of its queue is gone.
pub async fn run(
    shared: Arc<Shared>,
    project: String,
    mut queue: mpsc::UnboundedReceiver<Request>,
) {
    let mut writer = Writer {
        shared,
        project,
        fence: None,
        scratch: None,
        in_flight: VecDeque::new(),
        waiting: VecDeque::new(),
    };
    let mut open = true;
    loop {
        while let Ok(request) = queue.try_recv() {
            writer.waiting.push_back(request);
        }
        if !writer.waiting.is_empty() && writer.can_send() {
            writer.start_round().await;
            continue;
        }
        let can_send = open && writer.can_send();
        let Some(front) = writer.in_flight.front_mut() else {
            if !open {
                return;
            }
            match queue.recv().await {
                Some(request) => writer.waiting.push_back(request),
                None => open = false,
            }
            continue;
        };
        let woken = tokio::select! {
            outcomes = &mut front.outcomes => Woken::Answered(outcomes.unwrap_or_default()),
            request = queue.recv(), if can_send => Woken::Queued(request.map(Box::new)),
        };
        match woken {
            Woken::Answered(outcomes) => writer.finish_round(outcomes).await,
            Woken::Queued(Some(request)) => writer.waiting.push_back(*request),
            Woken::Queued(None) => open = false,
        }
    }
}

/// What the writer woke up for.
enum Woken {
    /// The oldest round in flight was answered.
    Answered(Vec<Outcome>),
    /// A command arrived (`None`: no one can send any more).
    Queued(Option<Box<Request>>),
}

struct Writer {
    shared: Arc<Shared>,
    project: String,
    /// What this writer's appends expect; `None` until it is elected (again).
    fence: Option<Fence>,
    /// The committed state plus every round in flight, what the next round is decided on.
    scratch: Option<Scratch>,
    /// Rounds sent, oldest first.
    in_flight: VecDeque<Round>,
    /// Commands not yet decided, in arrival order.
    waiting: VecDeque<Request>,
}

struct Scratch {
    project: Project,
    /// The log's sequence when the copy was taken.
    base: u64,
    /// The sequence the next decided event is numbered with (as if nothing else were
    /// stored meanwhile; the real one comes with the acknowledgement).
    next_sequence: u64,
}

/// A round sent to the log.
struct Round {
    decided: Vec<Decided>,
    base: u64,
    /// The project's state after the round, as decided, and the sequence its first event
    /// was numbered with: the committed state too, if the log stored them at those numbers.
    after: Project,
    first_sequence: u64,
    outcomes: JoinHandle<Vec<Outcome>>,
}

/// A command of a round, decided.
struct Decided {
    request: Request,
    decision: Result<Vec<Envelope>, Rejection>,
}

/// Why some of a round's commands did not land, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    None,
    /// Not sent: the connection to the log is down.
    Disconnected,
    /// Refused by the fence, or sent without an answer.
    ElectAgain,
}

/// Where a settled command goes.
#[derive(Default)]
struct Settled {
    answers: Vec<(Request, Result<Vec<Recorded>, CommandError>)>,
    stored: Vec<(u64, Envelope)>,
    again: Vec<Request>,
}

impl Writer {
    /// Grouped commits keep one batch in flight (a replicated stream admits no more for
    /// the fence's subject); pipelined ones several rounds.
    fn can_send(&self) -> bool {
        let limit = match self.shared.mode {
            CommitMode::Grouped => 1,
            CommitMode::Pipelined => 16,
        };
        self.in_flight.len() < limit && (self.fence.is_some() || self.in_flight.is_empty())
    }

    /// Takes the waiting commands (as many as a round holds), decides them and sends
    /// their events.
    async fn start_round(&mut self) {
        if !self.shared.is_writer(&self.project) {
            // Another instance writes for the project now: the caller sends it there.
            self.fence = None;
            for request in self.waiting.drain(..) {
                let error = match &request.sent {
                    Some(_) => CommandError::Unavailable(
                        "the project's writer moved while the command was on its way to the \
                         log; it may have been recorded"
                            .into(),
                    ),
                    None => CommandError::NotWriter,
                };
                request.answer(Err(error));
            }
            return;
        }
        let fence = match self.fence.clone() {
            Some(fence) => fence,
            None => match self.elect().await {
                Ok(fence) => fence,
                Err(e) => {
                    for request in self.waiting.drain(..) {
                        let error = match &request.sent {
                            Some(_) => CommandError::Unavailable(format!(
                                "{e}; the command may have been recorded before the log stopped answering"
                            )),
                            None => CommandError::Unavailable(e.clone()),
                        };
                        request.answer(Err(error));
                    }
                    return;
                }
            },
        };
        if self.waiting.iter().any(|r| r.sent.is_some()) {
            self.settle_unanswered().await;
        }
        if self.in_flight.is_empty() {
            // Nothing in flight: start again from what the log holds.
            self.scratch = None;
        }
        let scratch = self.scratch.get_or_insert_with(|| {
            self.shared.projection.read(|s| Scratch {
                project: s.project_or_empty(&self.project).clone(),
                base: s.sequence,
                next_sequence: s.sequence + 1,
            })
        });
        let base = scratch.base;
        let first_sequence = scratch.next_sequence;
        let time_ms = crate::time::now_ms();
        let mut decided = Vec::new();
        let mut events = 0;
        while let Some(request) = self.waiting.pop_front() {
            let decision =
                decide::decide(&request.command, &scratch.project, &self.shared.settings).map(
                    |decisions| {
                        decisions
                            .into_iter()
                            .map(|d| {
                                let envelope = envelope(
                                    &self.project,
                                    &request.ctx,
                                    time_ms,
                                    d.aggregate_id,
                                    d.event,
                                );
                                scratch.project.apply(scratch.next_sequence, &envelope);
                                scratch.next_sequence += 1;
                                envelope
                            })
                            .collect::<Vec<_>>()
                    },
                );
            events += decision.as_ref().map_or(0, Vec::len);
            decided.push(Decided { request, decision });
            let full = match self.shared.mode {
                // One batch: leave room for the next command's events (a few at most).
                CommitMode::Grouped => events + 16 > MAX_BATCH,
                CommitMode::Pipelined => false,
            };
            if full || decided.len() >= MAX_ROUND {
                break;
            }
        }
        let batches: Vec<&[Envelope]> = decided
            .iter()
            .filter_map(|d| d.decision.as_deref().ok().filter(|e| !e.is_empty()))
            .collect();
        let sent = self
            .shared
            .store
            .send(&batches, &fence, self.shared.mode)
            .await;
        let after = scratch.project.clone();
        self.in_flight.push_back(Round {
            decided,
            base,
            after,
            first_sequence,
            outcomes: tokio::spawn(sent.outcomes()),
        });
    }

    /// The oldest round's answer came: fold in what was stored, answer its callers, and
    /// on a failure settle every later round too before anything more is decided.
    async fn finish_round(&mut self, outcomes: Vec<Outcome>) {
        let Some(round) = self.in_flight.pop_front() else {
            return;
        };
        let mut settled = Settled::default();
        let mut failure = Failure::None;
        let (after, first_sequence) = (round.after.clone(), round.first_sequence);
        settle(&self.project, round, outcomes, &mut failure, &mut settled);
        if failure != Failure::None {
            // Every later round was decided on top of this one.
            while let Some(mut later) = self.in_flight.pop_front() {
                let outcomes = (&mut later.outcomes).await.unwrap_or_default();
                settle(&self.project, later, outcomes, &mut failure, &mut settled);
            }
            self.scratch = None;
        }

        if let Some(&(last, _)) = settled.stored.last() {
            // Stored where they were numbered: the state the round was decided to is the
            // committed one. Otherwise (another project's events came between) fold them.
            let as_numbered = failure == Failure::None
                && settled
                    .stored
                    .iter()
                    .zip(first_sequence..)
                    .all(|((stored, _), numbered)| *stored == numbered);
            let stored = if as_numbered {
                self.shared
                    .projection
                    .install(&self.project, after, settled.stored)
                    .err()
            } else {
                Some(settled.stored)
            };
            if let Some(stored) = stored {
                self.shared.projection.apply_committed(stored);
            }
            if !self
                .shared
                .projection
                .wait_for(last, CATCH_UP_TIMEOUT)
                .await
            {
                tracing::warn!(
                    sequence = last,
                    "recorded, but the projection has not caught up yet"
                );
            }
        }
        for (request, answer) in settled.answers {
            request.answer(answer);
        }

        match failure {
            Failure::None => {}
            // Nothing was sent, and deciding again now would fail the same way.
            Failure::Disconnected => {
                for request in settled.again {
                    request.answer(Err(CommandError::Unavailable(
                        "not connected to the event log".into(),
                    )));
                }
            }
            // Refused (another writer was elected) or unanswered: be elected again before
            // anything more is decided, then decide these first.
            Failure::ElectAgain => {
                self.fence = None;
                for request in settled.again.into_iter().rev() {
                    if request.attempts < MAX_ATTEMPTS {
                        self.waiting.push_front(request);
                    } else {
                        request.answer(Err(CommandError::Contended));
                    }
                }
            }
        }
    }

    /// Answers the waiting commands whose events an earlier round sent without an answer
    /// and which are in the log after all; the rest are decided again. Runs after a new
    /// election, so nothing sent before it can still land.
    async fn settle_unanswered(&mut self) {
        let after = self
            .waiting
            .iter()
            .filter_map(|r| Some(r.sent.as_ref()?.after))
            .min()
            .unwrap_or_default();
        let found = match self.find_in_log(after).await {
            Ok(found) => found,
            Err(e) => {
                for request in self.waiting.drain(..) {
                    request.answer(Err(CommandError::Unavailable(format!(
                        "{e}; the command may have been recorded before the log stopped answering"
                    ))));
                }
                return;
            }
        };
        for mut request in std::mem::take(&mut self.waiting) {
            let Some(sent) = request.sent.take() else {
                self.waiting.push_back(request);
                continue;
            };
            let landed: Option<Vec<u64>> = sent
                .events
                .iter()
                .map(|e| found.get(&e.id).copied())
                .collect();
            match landed {
                Some(sequences) => request.answer(Ok(recorded(&sequences, sent.events))),
                None => self.waiting.push_back(request),
            }
        }
    }

    /// The ids and sequences of the project's events after `after`.
    async fn find_in_log(&self, mut after: u64) -> Result<HashMap<String, u64>, String> {
        let filter = events::subject::filter(Some(&self.project), None, None);
        let mut found = HashMap::new();
        loop {
            let (page, more) = self
                .shared
                .store
                .read(after, &filter, 10_000)
                .await
                .map_err(|e| e.to_string())?;
            for (sequence, payload) in &page {
                if let Ok(envelope) = migrations::decode(payload) {
                    found.insert(envelope.id, *sequence);
                }
            }
            match page.last() {
                Some(&(last, _)) if more > 0 => after = last,
                _ => return Ok(found),
            }
        }
    }

    /// Catches up with the project's events and records this instance's election as the
    /// project's writer, expecting nothing newer of the project than what it caught up to;
    /// the election's sequence is what every later append expects.
    async fn elect(&mut self) -> Result<Fence, String> {
        let subject = events::subject::writer(&self.project);
        let everything = events::subject::filter(Some(&self.project), None, None);
        for _ in 0..MAX_ATTEMPTS {
            let head = self
                .shared
                .store
                .last_sequence_of(&everything)
                .await
                .map_err(|e| e.to_string())?;
            if !self
                .shared
                .projection
                .wait_for(head, CATCH_UP_TIMEOUT)
                .await
            {
                return Err("the projection did not catch up with the event log".into());
            }
            let election = envelope(
                &self.project,
                &crate::coordinator::system(),
                crate::time::now_ms(),
                events::writer::WRITER_ID.into(),
                Event::WriterElected(events::writer::WriterElected {
                    instance: self.shared.instance.clone(),
                }),
            );
            let expected = Fence {
                subject: everything.clone(),
                sequence: head,
            };
            let outcome = self
                .shared
                .store
                .commit(
                    &[std::slice::from_ref(&election)],
                    &expected,
                    CommitMode::Pipelined,
                )
                .await
                .into_iter()
                .next();
            match outcome {
                Some(Outcome::Stored(sequences)) => {
                    let sequence = sequences.first().copied().unwrap_or_default();
                    self.shared
                        .projection
                        .apply_committed([(sequence, election)]);
                    self.shared
                        .projection
                        .wait_for(sequence, CATCH_UP_TIMEOUT)
                        .await;
                    tracing::info!(
                        project = self.project,
                        sequence,
                        "elected the project's writer"
                    );
                    let fence = Fence { subject, sequence };
                    self.fence = Some(fence.clone());
                    return Ok(fence);
                }
                // Something of the project was recorded after we caught up (another writer,
                // or an election), or the answer was lost: catch up again and see.
                Some(Outcome::Refused) | Some(Outcome::Unknown(_)) => continue,
                Some(Outcome::NotSent) | None => {
                    return Err("not connected to the event log".into())
                }
            }
        }
        Err("could not be elected the project's writer: others keep recording".into())
    }
}

/// Sorts a round's commands by what the log did with them. A command is final once its
/// events are stored. The commands after one that did not land were decided on a state
/// that assumed it (even a rejection, or a command with nothing to record), so they are
/// decided again.
fn settle(
    project: &str,
    round: Round,
    outcomes: Vec<Outcome>,
    failure: &mut Failure,
    settled: &mut Settled,
) {
    let mut outcomes = outcomes.into_iter();
    for Decided {
        mut request,
        decision,
    } in round.decided
    {
        let outcome = match &decision {
            // A lost task answers nothing: the commands' fate is unknown.
            Ok(envelopes) if !envelopes.is_empty() => Some(
                outcomes
                    .next()
                    .unwrap_or(Outcome::Unknown("no answer".into())),
            ),
            _ => None,
        };
        match (decision, outcome) {
            (Ok(envelopes), Some(Outcome::Stored(sequences))) => {
                if *failure != Failure::None {
                    // Stored though something before it was not answered: it is in the
                    // log, so it happened.
                    tracing::warn!(
                        project,
                        "a command landed after one whose commit was not answered"
                    );
                }
                settled
                    .stored
                    .extend(sequences.iter().copied().zip(envelopes.iter().cloned()));
                settled
                    .answers
                    .push((request, Ok(recorded(&sequences, envelopes))));
                continue;
            }
            (Ok(envelopes), Some(Outcome::Unknown(why))) => {
                tracing::warn!(project, "the log did not answer a commit: {why}");
                request.sent = Some(Unanswered {
                    after: round.base,
                    events: envelopes,
                });
                *failure = Failure::ElectAgain;
            }
            (_, Some(Outcome::Refused)) => *failure = Failure::ElectAgain,
            (_, Some(Outcome::NotSent)) => *failure = (*failure).max(Failure::Disconnected),
            (decision, None) if *failure == Failure::None => {
                let answer = decision.map(|_| vec![]).map_err(CommandError::Rejected);
                settled.answers.push((request, answer));
                continue;
            }
            // A rejection or a command with nothing to record, after a failure; and
            // (impossible) an outcome for a command that sent nothing.
            _ => {}
        }
        request.attempts += 1;
        settled.again.push(request);
    }
}

fn envelope(
    project: &str,
    ctx: &CommandContext,
    time_ms: u64,
    aggregate_id: String,
    event: Event,
) -> Envelope {
    Envelope {
        id: ulid::Ulid::generate().to_string(),
        project: project.to_string(),
        aggregate: event.aggregate_kind(),
        aggregate_id,
        schema_version: SCHEMA_VERSION,
        time_ms,
        actor: ctx.actor.clone(),
        correlation_id: ctx.correlation_id.clone(),
        causation_id: ctx.causation_id.clone(),
        event,
    }
}

fn recorded(sequences: &[u64], envelopes: Vec<Envelope>) -> Vec<Recorded> {
    sequences
        .iter()
        .zip(envelopes)
        .map(|(&sequence, envelope)| Recorded { sequence, envelope })
        .collect()
}
