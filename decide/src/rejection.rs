//! Why a command was refused, in kinds a caller can act on, and the accumulator that
//! collects every validation error of a request before refusing it.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A command the rules refuse. Each kind maps to one HTTP status and one agent protocol
/// code, so callers never parse messages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rejection {
    /// The request itself is wrong; every field at fault is named.
    Invalid(Vec<FieldError>),
    /// What the command is about does not exist (in this project).
    NotFound(String),
    /// A name that must be unique in the project is in use.
    NameTaken(String),
    /// The report's lease is not the item's current lease: the agent must stop the work.
    LeaseLost(String),
    /// The aggregate is in a state that does not allow the command (completed work cannot
    /// be cancelled, a disabled target cannot start agents, ...).
    WrongState(String),
}

impl Rejection {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection::Invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// A short, stable name of the kind: the agent protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Invalid(_) => "invalid",
            Rejection::NotFound(_) => "not-found",
            Rejection::NameTaken(_) => "name-taken",
            Rejection::LeaseLost(_) => "lease-lost",
            Rejection::WrongState(_) => "wrong-state",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Invalid(errors) => {
                let parts: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect();
                f.write_str(&parts.join("; "))
            }
            Rejection::NotFound(m)
            | Rejection::NameTaken(m)
            | Rejection::LeaseLost(m)
            | Rejection::WrongState(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Rejection {}

/// Collects validation errors, so one response names every field at fault.
#[derive(Debug, Default)]
pub struct Validation(Vec<FieldError>);

impl Validation {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Adds the error unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.add(field, message);
        }
    }

    /// Takes in the errors of a nested validation; other rejections pass through.
    pub fn absorb<T>(&mut self, result: Result<T, Rejection>) -> Result<Option<T>, Rejection> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(Rejection::Invalid(mut errors)) => {
                self.0.append(&mut errors);
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors so far, as a rejection (call when they are not empty).
    pub fn into_rejection(self) -> Rejection {
        Rejection::Invalid(self.0)
    }

    /// `value` when nothing was wrong.
    pub fn finish<T>(self, value: T) -> Result<T, Rejection> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Rejection::Invalid(self.0))
        }
    }

    /// A trimmed, non-empty text of at most `max` characters without control characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.add(field, "must be a non-empty string");
        } else if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if value.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
    }

    /// Trims, checks and de-duplicates a list of names (capabilities, boundaries, tags).
    pub fn names(&mut self, field: &str, values: &[String], min: usize) -> Vec<String> {
        if values.len() < min {
            self.add(field, format!("must contain at least {min} item"));
        }
        if values.len() > 100 {
            self.add(field, "must contain at most 100 items");
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let v = v.trim();
            if v.is_empty() || v.chars().count() > 128 || v.chars().any(char::is_control) {
                self.add(
                    format!("{field}[{i}]"),
                    "must be a non-empty string of at most 128 characters",
                );
            } else if seen.insert(v.to_string()) {
                out.push(v.to_string());
            }
        }
        out
    }
}

/// An agent type: lowercase letters, digits and `-`, such as `claude-code`.
pub fn is_agent_type(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A POSIX environment variable name.
pub fn is_env_name(value: &str) -> bool {
    let mut bytes = value.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An RFC 3339 date-time as the API declares it: `2026-01-31T12:00:00Z`, with optional
/// fractional seconds and a `Z` or `+hh:mm` offset.
pub fn is_rfc3339(value: &str) -> bool {
    let b = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let date_time = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !date_time {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_exactly_what_the_api_declares() {
        for ok in [
            "2026-01-31T12:00:00Z",
            "2026-01-31t12:00:00.123z",
            "2026-01-31T12:00:00+02:00",
            "2026-01-31T12:00:00.5-07:30",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "tomorrow",
            "2026-01-31 12:00:00Z",
            "2026-01-31T12:00:00",
            "2026-01-31T12:00:00+0200",
            "2026-01-31T12:00:00.Z",
            "2026-01-31T12:00:00Z\n",
            "2026-01-31T12:00:00ZZ",
            "２０２６-01-31T12:00:00Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
