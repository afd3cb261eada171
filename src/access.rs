//! Who may do what through the API: the role each request needs, the projects a token may
//! see, and token secrets (made here, hashed before anything keeps them).

use std::collections::BTreeSet;

use events::access::{is_reserved_project, Role};
use poem::http::Method;
use sha2::{Digest, Sha256};

/// What one request may do and see.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub role: Role,
    /// `None`: every project.
    pub projects: Option<BTreeSet<String>>,
    /// Whether its requests count against the per-token rate limit.
    pub rate_limited: bool,
}

impl Access {
    /// The API without authentication, and the tokens of `API_TOKENS`.
    pub fn everything() -> Self {
        Access {
            role: Role::Admin,
            projects: None,
            rate_limited: false,
        }
    }

    pub fn may(&self, role: Role) -> bool {
        self.role >= role
    }

    /// Whether the project exists for this request. Weft's own projects (tokens) are seen
    /// by admins of every project only.
    pub fn sees(&self, project: &str) -> bool {
        if is_reserved_project(project) {
            return self.role == Role::Admin && self.projects.is_none();
        }
        self.projects.as_ref().is_none_or(|p| p.contains(project))
    }

    /// Whether everything `projects` (None: every project) may see, this request sees.
    pub fn covers(&self, projects: Option<&[String]>) -> bool {
        match (&self.projects, projects) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|p| mine.contains(p)),
        }
    }
}

/// The role a request needs: reading needs a viewer; changing work and agents an
/// operator; everything else (targets, budgets, tokens, credentials) an admin. Listing
/// tokens or credentials is an admin's too.
pub fn required_role(method: &Method, path: &str) -> Role {
    let admin_reads = ["/api/tokens", "/api/credentials"];
    let admin_only = admin_reads
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if admin_only {
        return Role::Admin;
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Role::Viewer;
    }
    let operated = ["/api/work", "/api/agents"];
    if operated
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return Role::Operator;
    }
    Role::Admin
}

/// A new token secret: `weft_` and 64 hex digits (244 random bits).
pub fn new_secret() -> String {
    format!(
        "weft_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// What is kept of a secret: SHA-256, hex. Comparing digests rather than secrets also keeps
/// a comparison's timing independent of how much of a guess is right.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// A new token id: `tok_` and a ULID, lower case (it is also the actor of its requests).
pub fn new_token_id() -> String {
    format!("tok_{}", ulid::Ulid::generate().to_string().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_what_a_request_changes() {
        let cases = [
            (Method::GET, "/api/work", Role::Viewer),
            (Method::GET, "/api/events", Role::Viewer),
            (Method::GET, "/api/ws", Role::Viewer),
            (Method::POST, "/api/work", Role::Operator),
            (Method::POST, "/api/work/x/cancel", Role::Operator),
            (Method::POST, "/api/agents/a/shutdown", Role::Operator),
            (Method::POST, "/api/targets", Role::Admin),
            (Method::PUT, "/api/projects/p/budget", Role::Admin),
            (Method::GET, "/api/tokens", Role::Admin),
            (Method::DELETE, "/api/tokens/tok_1", Role::Admin),
            (Method::GET, "/api/credentials", Role::Admin),
            (Method::POST, "/api/workx", Role::Admin),
        ];
        for (method, path, role) in cases {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
    }

    #[test]
    fn scope_hides_other_projects_and_weft_s_own_from_all_but_global_admins() {
        let scoped = Access {
            role: Role::Admin,
            projects: Some(["alpha".to_string()].into()),
            rate_limited: true,
        };
        assert!(scoped.sees("alpha") && !scoped.sees("beta") && !scoped.sees("_weft"));
        assert!(Access::everything().sees("_weft"));
        let viewer = Access {
            role: Role::Viewer,
            projects: None,
            rate_limited: true,
        };
        assert!(viewer.sees("beta") && !viewer.sees("_weft"));
        assert!(scoped.covers(Some(&["alpha".into()])));
        assert!(!scoped.covers(Some(&["alpha".into(), "beta".into()])));
        assert!(!scoped.covers(None) && viewer.covers(None));
    }

    #[test]
    fn secrets_are_long_random_and_kept_as_digests() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 64);
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(
            digest(&format!(" {a} ")),
            digest(&a),
            "surrounding blanks do not count"
        );
    }
}
