//! Agents' output lines, kept out of the audit log: the `WEFT_OUTPUT` stream holds one
//! message per report an agent sends (a chunk of lines) under `weft.output.<project>.<workId>`,
//! within limits per item and by age, so a chatty agent cannot grow the permanent log.
//! The audit log keeps only coarse progress (`work.progressed`).

use serde::{Deserialize, Serialize};

/// The JetStream stream of output chunks.
pub const STREAM: &str = "WEFT_OUTPUT";
pub const PREFIX: &str = "weft.output";
/// Every chunk of every item.
pub const ALL: &str = "weft.output.>";

/// Most lines in one chunk, most characters in one line (longer lines are cut), and most
/// bytes of text in one chunk: its JSON stays under [`MAX_CHUNK_BYTES`] even when every
/// byte needs escaping (six bytes for a control character).
pub const MAX_LINES_PER_CHUNK: usize = 500;
pub const MAX_LINE_CHARS: usize = 2000;
pub const MAX_CHUNK_TEXT_BYTES: usize = 128 * 1024;
/// Most bytes of one message of the stream (NATS' default payload limit).
pub const MAX_CHUNK_BYTES: i32 = 1024 * 1024;

pub fn subject(project: &str, work_id: &str) -> String {
    format!("{PREFIX}.{project}.{work_id}")
}

/// Lines an agent printed during one attempt of an item, numbered from `first_line`
/// (1 for an attempt's first line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    pub work_id: String,
    pub agent_id: String,
    pub attempt: u32,
    pub first_line: u64,
    pub lines: Vec<String>,
    pub at_ms: u64,
}

impl Chunk {
    /// The line number after this chunk's last line.
    pub fn next_line(&self) -> u64 {
        self.first_line + self.lines.len() as u64
    }
}

/// `lines` grouped into the lines of chunks within the limits: lines longer than
/// [`MAX_LINE_CHARS`] are cut (ending with `…`), and each group has at most
/// [`MAX_LINES_PER_CHUNK`] lines and [`MAX_CHUNK_TEXT_BYTES`] bytes of text.
pub fn chunks_of(lines: impl IntoIterator<Item = String>) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for line in lines {
        let line = if line.chars().count() > MAX_LINE_CHARS {
            let mut cut: String = line.chars().take(MAX_LINE_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            line
        };
        let full = groups.last().is_none_or(|g| {
            g.len() >= MAX_LINES_PER_CHUNK || bytes + line.len() > MAX_CHUNK_TEXT_BYTES
        });
        if full {
            groups.push(Vec::new());
            bytes = 0;
        }
        bytes += line.len();
        if let Some(group) = groups.last_mut() {
            group.push(line);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_bounded_in_lines_bytes_and_line_length() {
        let long = "x".repeat(MAX_LINE_CHARS + 10);
        let groups = chunks_of(
            std::iter::once(long).chain((0..MAX_LINES_PER_CHUNK + 5).map(|i| i.to_string())),
        );
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), MAX_LINES_PER_CHUNK);
        assert_eq!(groups[0][0].chars().count(), MAX_LINE_CHARS);
        assert!(groups[0][0].ends_with('…'));
        assert_eq!(groups[0][1], "0");
        assert_eq!(groups[1].len(), 6, "the order and every line kept");
        assert_eq!(groups[1][5], (MAX_LINES_PER_CHUNK + 4).to_string());
        assert!(chunks_of(Vec::new()).is_empty());

        // Lines of control characters (the worst case for JSON) still fit a message.
        let worst = "\u{1}".repeat(MAX_LINE_CHARS);
        let groups = chunks_of(vec![worst; 400]);
        assert!(groups.len() > 1, "cut by bytes before the line limit");
        for lines in groups {
            let chunk = Chunk {
                work_id: "w".into(),
                agent_id: "a".into(),
                attempt: 1,
                first_line: 1,
                lines,
                at_ms: 0,
            };
            let encoded = serde_json::to_vec(&chunk).map_or(usize::MAX, |v| v.len());
            assert!(encoded < MAX_CHUNK_BYTES as usize, "{encoded}");
        }
    }

    #[test]
    fn subjects_and_line_numbers() {
        assert_eq!(subject("p", "w1"), "weft.output.p.w1");
        let chunk = Chunk {
            work_id: "w".into(),
            agent_id: "a".into(),
            attempt: 1,
            first_line: 11,
            lines: vec!["a".into(), "b".into()],
            at_ms: 0,
        };
        assert_eq!(chunk.next_line(), 13);
    }
}
