//! The embedded store's one writer thread. Writes are committed in groups: whatever arrived
//! while the previous commit was syncing goes into the next transaction, one savepoint per
//! write (so a failing write fails alone), and every caller is answered after the commit that
//! made its write durable. One fsync per group instead of per write: concurrent writers stop
//! queueing behind each other's fsync (measured in docs/performance.md).

use rusqlite::Connection;
use sluice_sdk::StoreError;

/// One write for the writer thread: the work (run inside the group's transaction) and where
/// its result goes once the group is committed.
pub struct Job {
    work: Work,
    reply: Reply,
}

pub type Work = Box<dyn FnOnce(&Connection) -> rusqlite::Result<usize> + Send>;
pub type Reply = Box<dyn FnOnce(Result<usize, StoreError>) + Send>;

/// Runs one statement, parsed once per connection: SQLite's parser was a fifth of this thread's
/// time when every write and every savepoint was parsed again.
pub fn run(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Most writes in one transaction.
const MAX_GROUP: usize = 256;

/// Runs every job of each group in one transaction, a savepoint per job.
fn writer_loop(conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    // Room for every statement the store writes with (about 15), so none is parsed twice.
    conn.set_prepared_statement_cache_capacity(32);
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run(&conn, "BEGIN IMMEDIATE", []) {
            for job in group {
                (job.reply)(Err(shared(&e)));
            }
            continue;
        }
        let mut done = Vec::with_capacity(group.len());
        // Alone in its group, a write needs no savepoint: its failure rolls back the group.
        let alone = group.len() == 1;
        for job in group {
            let Job { work, reply } = job;
            // A write that panics fails alone instead of taking the writer thread down.
            let work_alone = |work: Work| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&conn)))
                    .unwrap_or_else(|_| Err(rusqlite::Error::InvalidQuery))
            };
            if alone {
                let result = work_alone(work).map_err(err);
                if result.is_err() {
                    let _ = conn.execute_batch("ROLLBACK");
                    reply(result);
                    break;
                }
                done.push((reply, result));
                continue;
            }
            let result = match run(&conn, "SAVEPOINT job", []) {
                Ok(_) => match work_alone(work) {
                    Ok(n) => run(&conn, "RELEASE job", []).map(|_| n).map_err(err),
                    Err(e) => {
                        let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                        Err(err(e))
                    }
                },
                Err(e) => Err(err(e)),
            };
            done.push((reply, result));
        }
        if done.is_empty() {
            continue;
        }
        let committed = run(&conn, "COMMIT", []).map(|_| ());
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for (reply, result) in done {
            reply(match &committed {
                Ok(()) => result,
                Err(e) => Err(shared(e)),
            });
        }
    }
}

/// The handle callers submit writes through.
#[derive(Clone)]
pub struct Writer(std::sync::mpsc::Sender<Job>);

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (writer, jobs) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sluice-store-writer".into())
            .spawn(move || writer_loop(conn, jobs))
            .map_err(StoreError::from_cause)?;
        Ok(Writer(writer))
    }

    /// Queues `work`; `reply` gets its result once the group it ran in is committed.
    pub fn submit(&self, work: Work, reply: Reply) -> Result<(), StoreError> {
        self.0.send(Job { work, reply }).map_err(|_| stopped())
    }
}

pub fn stopped() -> StoreError {
    StoreError::new("the store's writer has stopped")
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::from_cause(e)
}

/// One failure answered to every write of a group (the driver's error cannot be cloned).
fn shared(e: &rusqlite::Error) -> StoreError {
    StoreError::new(e.to_string())
}
