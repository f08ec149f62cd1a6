//! Errors the client cannot act on (storage failures, bugs) are logged in
//! full on the server and answered with an incident number only: their
//! text names files and object-store paths, which say more about the
//! machine than a client should learn.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_INCIDENT: AtomicU64 = AtomicU64::new(1);

/// Logs `error` under a new incident number and returns what the client
/// is told instead.
pub fn report(error: &dyn std::fmt::Display) -> String {
    let incident = NEXT_INCIDENT.fetch_add(1, Ordering::Relaxed);
    tracing::error!(incident, %error, "request failed on the server's side");
    format!("internal server error (incident {incident}: the server's log has the details)")
}
