//! Cursors in the original's format: base64url (no padding) of JSON
//! `{offset, limit, filterHash}`, where `filterHash` ties a cursor to the filters it was
//! made with. Unlike the original, a cursor that does not decode is a 400, not a 500.
//!
//! A next-page cursor also carries `after`, the position of the page's last row in the
//! list's order, so the next page starts there at once instead of counting `offset` rows
//! (the original's clients treat cursors as opaque, so the extra field changes nothing
//! for them). Lists that cannot start at a position use `offset`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::ApiError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cursor {
    offset: i64,
    limit: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    /// Where the previous page ended, in the list's own terms (see the module's notes).
    pub after: Option<String>,
}

pub struct PageLinks {
    pub has_more: bool,
    pub next_cursor: Option<String>,
    pub prev_cursor: Option<String>,
}

/// First 16 hex digits of SHA-256 over the filter's JSON with keys sorted; only filters
/// that were given take part.
pub fn filter_hash(filters: &[(&str, Option<&str>)]) -> String {
    let mut given: Vec<_> = filters
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    given.sort();
    let map: Map<String, Value> = given
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect();
    let json = serde_json::to_string(&map).unwrap_or_default();
    hex::encode(Sha256::digest(json.as_bytes()))[..16].to_string()
}

fn encode(offset: usize, limit: usize, hash: &str, after: Option<String>) -> String {
    let cursor = Cursor {
        offset: offset as i64,
        limit: limit as i64,
        filter_hash: Some(hash.to_string()),
        after,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

/// The page a request asks for. `limit` (1..=100, checked by the parameter's validator)
/// overrides the cursor's limit.
pub fn page(cursor: Option<&str>, limit: Option<i64>, hash: &str) -> Result<Page, ApiError> {
    let Some(raw) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(Page {
            offset: 0,
            limit: limit.map_or(DEFAULT_LIMIT, |l| l as usize),
            after: None,
        });
    };
    let invalid = || {
        ApiError::validation(
            "cursor",
            "is not a cursor returned by this API; start a new query without it",
        )
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let decoded: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if decoded.offset < 0 || !(1..=1000).contains(&decoded.limit) {
        return Err(invalid());
    }
    if decoded.filter_hash.as_deref().is_some_and(|h| h != hash) {
        return Err(ApiError::bad_request(
            "Cursor filter mismatch - filters changed between requests. Start a new query.",
        ));
    }
    Ok(Page {
        offset: decoded.offset as usize,
        limit: limit.map_or((decoded.limit as usize).min(MAX_LIMIT), |l| l as usize),
        after: decoded.after,
    })
}

/// The cursors around a page of `count` rows out of `total`; `last` is the position of the
/// page's last row, for lists that can start at a position.
pub fn links(
    page: &Page,
    count: usize,
    total: usize,
    hash: &str,
    last: Option<String>,
) -> PageLinks {
    let has_more = page.offset + count < total;
    PageLinks {
        has_more,
        next_cursor: has_more.then(|| encode(page.offset + count, page.limit, hash, last)),
        prev_cursor: (page.offset > 0).then(|| {
            encode(
                page.offset.saturating_sub(page.limit),
                page.limit,
                hash,
                None,
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_carry_their_filters() {
        let hash = filter_hash(&[("status", Some("available")), ("type", None)]);
        let first = page(None, Some(2), &hash).unwrap();
        assert_eq!(
            first,
            Page {
                offset: 0,
                limit: 2,
                after: None,
            }
        );
        let l = links(&first, 2, 5, &hash, Some("b".into()));
        assert!(l.has_more && l.prev_cursor.is_none());
        let second = page(l.next_cursor.as_deref(), None, &hash).unwrap();
        assert_eq!(
            second,
            Page {
                offset: 2,
                limit: 2,
                after: Some("b".into()),
            }
        );
        let back = links(&second, 2, 5, &hash, Some("d".into()));
        let first_again = page(back.prev_cursor.as_deref(), None, &hash).unwrap();
        assert_eq!((first_again.offset, first_again.after), (0, None));
        let other = filter_hash(&[("status", Some("disabled"))]);
        assert!(page(l.next_cursor.as_deref(), None, &other).is_err());
    }

    #[test]
    fn garbage_cursors_are_client_errors() {
        let hash = filter_hash(&[]);
        for bad in ["%%%", "bm90IGpzb24", "eyJvZmZzZXQiOi0xLCJsaW1pdCI6MTB9"] {
            assert!(
                matches!(page(Some(bad), None, &hash), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
