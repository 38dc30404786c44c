//! Heavy requests run their pipeline hook on the blocking pool. A hook on an 18 MB conversation
//! converts, clones and serialises for a good part of a second: on an HTTP worker thread that
//! is a second in which every connection of that worker (the health check included) waits.
//! The future still uses the worker's runtime for its I/O and timers; only its polling, where
//! the CPU time goes, moves.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// Bodies above this many bytes are heavy.
pub const HEAVY_BYTES: usize = 256 * 1024;

/// Runs `work` here when `heavy` is false, else on a blocking thread. Dropping the returned
/// future (the client left) cancels `work` either way.
pub async fn run<F, T>(heavy: bool, work: F) -> Result<T, ApiError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    if !heavy {
        return Ok(work.await);
    }
    let handle = tokio::runtime::Handle::current();
    let cancel = CancellationToken::new();
    let _cancel_on_drop = cancel.clone().drop_guard();
    let done = tokio::task::spawn_blocking(move || {
        let _lent = sluice_sdk::offloaded::enter();
        handle.block_on(async move {
            tokio::select! {
                result = work => Some(result),
                () = cancel.cancelled() => None,
            }
        })
    })
    .await
    .map_err(|e| match e.is_panic() {
        true => ApiError::bug(),
        false => ApiError::Internal(format!("the request's work stopped: {}", sluice_sdk::join_failure(&e))),
    })?;
    done.ok_or_else(|| ApiError::Internal("the request was abandoned".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heavy_work_runs_on_a_thread_marked_as_lent() {
        let offloaded = || async { sluice_sdk::offloaded::is_offloaded() };
        assert!(run(true, offloaded()).await.unwrap());
        assert!(!run(false, offloaded()).await.unwrap());
        assert!(!sluice_sdk::offloaded::is_offloaded());
    }

    #[tokio::test]
    async fn a_panic_in_heavy_work_is_answered_without_its_message() {
        // tokio's error for it reads `task N panicked with message "…"`: the caller's text.
        let error = run(true, async { panic!("a caller's text") }).await.err().unwrap();
        assert_eq!(error.to_string(), ApiError::bug().to_string());
    }
}
