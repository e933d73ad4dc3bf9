//! Who asked: the caller of the request being handled, for the job records and the audit
//! log.
//!
//! [`crate::auth::require_role`] (and the MCP endpoint, around each tool call) runs the
//! handler inside [`scope`] with the authenticated [`Principal`]; every job creation site
//! takes [`caller`], so each job records the caller's identity and role (`demo` when
//! authentication is off) without every handler passing the principal along. The queue logs
//! one structured line per job state change under the tracing target `aetherv::audit`.

use std::future::Future;

use crate::auth::Principal;
use crate::auth::middleware::ANONYMOUS_SUBJECT;
use crate::jobs::Requester;

tokio::task_local! {
    static CALLER: Requester;
}

/// The subject recorded for callers when authentication is off (demo mode).
pub const DEMO_SUBJECT: &str = "demo";

/// The job record's view of `principal`.
pub fn requester(principal: &Principal) -> Requester {
    if principal.subject == ANONYMOUS_SUBJECT {
        return Requester {
            subject: DEMO_SUBJECT.to_owned(),
            name: None,
            roles: vec![principal.role.as_str().to_owned()],
            reason: None,
            ticket: None,
        };
    }
    Requester {
        subject: principal.subject.clone(),
        name: principal.name.clone(),
        roles: vec![principal.role.as_str().to_owned()],
        reason: None,
        ticket: None,
    }
}

/// Runs `future` (a handler) with `principal` as the caller.
pub async fn scope<F: Future>(principal: &Principal, future: F) -> F::Output {
    CALLER.scope(requester(principal), future).await
}

/// The caller of the request being handled. Outside a request (the server's own work) the
/// subject is `system`.
pub fn caller() -> Requester {
    CALLER.try_with(Clone::clone).unwrap_or_else(|_| Requester {
        subject: "system".to_owned(),
        ..Requester::default()
    })
}
