//! The upstream HTTP client, one per thread. hyper drives each pooled connection as a task on
//! the runtime that opened it, and every actix worker is a runtime on its own thread: with one
//! client shared by all workers, a chat on one worker often rides a connection another worker
//! drives, and the request, the answer's head and each read of its body cross threads, a
//! wake-up of a sleeping thread each time (about 90 µs before the first byte at p50 on the
//! 2-core machine of docs/performance.md). A client per thread keeps a worker's chats on the
//! connections it drives itself. Threads lent to heavy requests get one shared client.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use sluice_sdk::PipelineError;

/// How the clients are made; replaced when the valves that set it change.
#[derive(Debug, PartialEq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
}

impl ClientSettings {
    fn build(&self) -> Result<reqwest::Client, PipelineError> {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("sluice-openai-responses/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                PipelineError::internal(format!("cannot build the HTTP client: {}", sluice_sdk::error_chain(&e)))
            })
    }
}

thread_local! {
    /// This thread's clients, by the settings they were made with (several manifolds may live
    /// in one process, as in the tests). Entries of replaced settings go on the next lookup.
    static LOCAL: RefCell<Vec<(Weak<ClientSettings>, reqwest::Client)>> = const { RefCell::new(Vec::new()) };
}

pub struct Clients {
    settings: ArcSwap<ClientSettings>,
    /// For threads lent to heavy requests (`sluice_sdk::offloaded`), which come and go: a
    /// client of their own would start cold each time.
    shared: ArcSwap<reqwest::Client>,
}

impl Clients {
    /// Checks that a client can be made with `settings` before any request needs one.
    pub fn new(settings: ClientSettings) -> Result<Self, PipelineError> {
        let shared = settings.build()?;
        Ok(Clients { settings: ArcSwap::from_pointee(settings), shared: ArcSwap::from_pointee(shared) })
    }

    /// Later requests use clients made with `settings`. The same settings keep the clients:
    /// every valves edit (a key, a model) comes here, and new clients would drop each thread's
    /// pooled upstream connections (a new TLS handshake per thread's next chat) and make each
    /// thread stop for milliseconds to build its own again (root certificates, resolver).
    pub fn replace(&self, settings: ClientSettings) -> Result<(), PipelineError> {
        if **self.settings.load() == settings {
            return Ok(());
        }
        let shared = settings.build()?;
        self.settings.store(Arc::new(settings));
        self.shared.store(Arc::new(shared));
        Ok(())
    }

    /// This thread's client for the current settings (cheap to clone: it shares the pool).
    pub fn get(&self) -> Result<reqwest::Client, PipelineError> {
        if sluice_sdk::offloaded::is_offloaded() {
            return Ok(self.shared.load().as_ref().clone());
        }
        let settings = self.settings.load_full();
        LOCAL.with_borrow_mut(|local| {
            local.retain(|(s, _)| s.strong_count() > 0);
            if let Some((_, client)) = local.iter().find(|(s, _)| std::ptr::eq(s.as_ptr(), Arc::as_ptr(&settings))) {
                return Ok(client.clone());
            }
            let client = settings.build()?;
            local.push((Arc::downgrade(&settings), client.clone()));
            Ok(client)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings() -> ClientSettings {
        ClientSettings { connect_timeout: Duration::from_secs(5) }
    }

    #[test]
    fn a_thread_keeps_its_client_until_the_settings_change() {
        let clients = Clients::new(settings()).unwrap();
        clients.get().unwrap();
        let count = || LOCAL.with_borrow(Vec::len);
        assert_eq!(count(), 1);
        clients.get().unwrap();
        assert_eq!(count(), 1, "the same settings reuse this thread's client");
        clients.replace(settings()).unwrap();
        let kept = LOCAL.with_borrow(|local| local[0].0.upgrade().map(|s| Arc::ptr_eq(&s, &clients.settings.load())));
        assert_eq!(kept, Some(true), "the same settings keep this thread's client");
        clients.replace(ClientSettings { connect_timeout: Duration::from_secs(6) }).unwrap();
        clients.get().unwrap();
        assert_eq!(count(), 1, "the client of replaced settings is dropped");
        let other = Clients::new(settings()).unwrap();
        other.get().unwrap();
        assert_eq!(count(), 2, "another manifold has its own");
        drop(other);
        clients.get().unwrap();
        assert_eq!(count(), 1);
        std::thread::spawn(move || {
            {
                let _lent = sluice_sdk::offloaded::enter();
                clients.get().unwrap();
                assert_eq!(LOCAL.with_borrow(Vec::len), 0, "a thread lent to a heavy request uses the shared client");
            }
            clients.get().unwrap();
            assert_eq!(LOCAL.with_borrow(Vec::len), 1, "each thread makes its own");
        })
        .join()
        .unwrap();
    }
}
