//! Reading and writing the output stream (`WEFT_OUTPUT`): agents' lines by item, apart
//! from the audit log. Pages for `GET /api/work/{id}/output` come from direct gets by
//! subject (any replica may answer); following an item live is an ordered consumer on its
//! subject, so every instance can serve it whichever instance took the lines.

use async_nats::jetstream::{self, consumer, stream::DirectGetErrorKind};
use events::output::{subject, Chunk};
use futures::{Stream, StreamExt};

/// One chunk as stored, with its place in the stream.
#[derive(Clone, Debug)]
pub struct Stored {
    pub sequence: u64,
    pub chunk: Chunk,
}

/// A page of an item's output: whole chunks after a sequence.
#[derive(Debug, Default)]
pub struct Page {
    pub chunks: Vec<Stored>,
    /// Whether more chunks follow the last one of this page now.
    pub more: bool,
}

#[derive(Clone)]
pub struct OutputStore {
    js: jetstream::Context,
}

impl OutputStore {
    pub fn new(client: async_nats::Client) -> Self {
        OutputStore {
            js: jetstream::new(client),
        }
    }

    /// Appends one chunk; answers once JetStream has it.
    pub async fn append(&self, project: &str, chunk: &Chunk) -> Result<u64, String> {
        let body = serde_json::to_vec(chunk).map_err(|e| e.to_string())?;
        let ack = self
            .js
            .publish(subject(project, &chunk.work_id), body.into())
            .await
            .map_err(|e| format!("cannot store output: {e}"))?;
        let ack = ack.await.map_err(|e| format!("output not stored: {e}"))?;
        Ok(ack.sequence)
    }

    /// The chunks of one item after `after`, whole chunks until at least `lines` lines
    /// (always at least one chunk, when there is one).
    pub async fn page(
        &self,
        project: &str,
        work_id: &str,
        after: u64,
        lines: usize,
    ) -> Result<Page, String> {
        let stream = self
            .js
            .get_stream_no_info(events::output::STREAM)
            .await
            .map_err(|e| format!("the output stream is unavailable: {e}"))?;
        let subject = subject(project, work_id);
        let mut page = Page::default();
        let mut counted = 0;
        let mut next = after.saturating_add(1);
        loop {
            let message = match stream
                .direct_get_next_for_subject(&subject, Some(next))
                .await
            {
                Ok(message) => message,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(page),
                Err(e) => return Err(format!("cannot read output: {e}")),
            };
            if counted >= lines {
                page.more = true;
                return Ok(page);
            }
            next = message.sequence + 1;
            let Ok(chunk) = serde_json::from_slice::<Chunk>(&message.payload) else {
                continue;
            };
            counted += chunk.lines.len();
            page.chunks.push(Stored {
                sequence: message.sequence,
                chunk,
            });
        }
    }

    /// Every chunk of one item after `after`, then live ones as they are stored. Ends if
    /// the stream becomes unreadable.
    pub async fn follow(
        &self,
        project: &str,
        work_id: &str,
        after: u64,
    ) -> Result<impl Stream<Item = Stored> + Send + 'static, String> {
        let stream = self
            .js
            .get_stream_no_info(events::output::STREAM)
            .await
            .map_err(|e| format!("the output stream is unavailable: {e}"))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject(project, work_id),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after.saturating_add(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot follow output: {e}"))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| format!("cannot follow output: {e}"))?;
        Ok(messages
            .take_while(|m| futures::future::ready(m.is_ok()))
            .filter_map(|m| async move {
                let m = m.ok()?;
                let sequence = m.info().ok()?.stream_sequence;
                let chunk = serde_json::from_slice::<Chunk>(&m.payload).ok()?;
                Some(Stored { sequence, chunk })
            }))
    }
}
