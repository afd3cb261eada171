//! Subjects of the event log: `weft.ev.<project>.<kind>.<id>`, one subject per aggregate,
//! so JetStream's per-subject sequence gives optimistic concurrency per aggregate.

use crate::AggregateKind;

pub const PREFIX: &str = "weft.ev";
/// Every event of every project.
pub const ALL: &str = "weft.ev.>";

pub fn aggregate(project: &str, kind: AggregateKind, id: &str) -> String {
    format!("{PREFIX}.{project}.{}.{id}", kind.as_str())
}

/// The subject every append of a project's writer expects to be unchanged.
pub fn writer(project: &str) -> String {
    aggregate(project, AggregateKind::Writer, crate::writer::WRITER_ID)
}

/// All aggregates of one kind in one project: the scope of checks that span aggregates,
/// such as unique target names.
pub fn kind_in_project(project: &str, kind: AggregateKind) -> String {
    format!("{PREFIX}.{project}.{}.*", kind.as_str())
}

/// A filter over the log; `None` matches any value of that token.
pub fn filter(project: Option<&str>, kind: Option<AggregateKind>, id: Option<&str>) -> String {
    format!(
        "{PREFIX}.{}.{}.{}",
        project.unwrap_or("*"),
        kind.map(AggregateKind::as_str).unwrap_or("*"),
        id.unwrap_or("*")
    )
}

/// Whether `value` can stand as one subject token (and so as a project or aggregate id).
/// Restricted to a conservative alphabet so ids are also safe in KV keys and URLs.
pub fn is_valid_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_one_token_per_part() {
        assert_eq!(
            aggregate("p1", AggregateKind::Target, "abc"),
            "weft.ev.p1.target.abc"
        );
        assert_eq!(
            kind_in_project("p1", AggregateKind::Target),
            "weft.ev.p1.target.*"
        );
        assert_eq!(filter(None, None, None), "weft.ev.*.*.*");
        assert_eq!(
            filter(Some("p"), Some(AggregateKind::Target), None),
            "weft.ev.p.target.*"
        );
    }

    #[test]
    fn tokens_reject_subject_syntax() {
        assert!(is_valid_token("default"));
        assert!(is_valid_token("a1b2-c3_d4"));
        for bad in ["", "a.b", "a*", ">", "a b", "ä", &"x".repeat(129)] {
            assert!(!is_valid_token(bad), "{bad:?} should be rejected");
        }
    }
}
