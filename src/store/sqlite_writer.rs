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
        let mut pending = group.into_iter();
        while pending.len() > 0 {
            commit_some(&conn, &mut pending);
        }
    }
}

/// Runs jobs from `pending` in one transaction and answers each once its fate is known. Stops
/// early when a write ends the whole transaction (a full disk, an I/O error, a trigger's
/// `RAISE(ROLLBACK)`): the writes before it went with it and are answered so; the rest are
/// left for a new transaction, not run outside one.
fn commit_some(conn: &Connection, pending: &mut std::vec::IntoIter<Job>) {
    if let Err(e) = run(conn, "BEGIN IMMEDIATE", []) {
        for job in pending {
            (job.reply)(Err(shared(&e)));
        }
        return;
    }
    let mut done = Vec::with_capacity(pending.len());
    // Alone in its group, a write needs no savepoint: its failure rolls back the group.
    let alone = pending.len() == 1;
    // A write that panics fails alone instead of taking the writer thread down.
    let work_alone = |work: Work| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(rusqlite::Error::InvalidQuery))
    };
    for Job { work, reply } in pending.by_ref() {
        if alone {
            let result = work_alone(work).map_err(err);
            if result.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
                reply(result);
                return;
            }
            done.push((reply, result));
            continue;
        }
        let result = match run(conn, "SAVEPOINT job", []) {
            Ok(_) => match work_alone(work) {
                Ok(n) => run(conn, "RELEASE job", []).map(|_| n).map_err(err),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    Err(err(e))
                }
            },
            Err(e) => Err(err(e)),
        };
        if result.is_err() && conn.is_autocommit() {
            for (earlier, _) in done {
                earlier(Err(StoreError::new("rolled back with a failing write of the same group; not written")));
            }
            reply(result);
            return;
        }
        done.push((reply, result));
    }
    if done.is_empty() {
        return;
    }
    let committed = run(conn, "COMMIT", []).map(|_| ());
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_write_that_ends_the_transaction_is_not_followed_by_writes_reported_wrongly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (v INTEGER);
             CREATE TRIGGER boom BEFORE INSERT ON t WHEN NEW.v = 0 BEGIN SELECT RAISE(ROLLBACK, 'boom'); END;",
        )
        .unwrap();
        let writer = Writer::start(conn).unwrap();
        // The first write holds the thread, so the next four arrive together as one group.
        let hold: Work = Box::new(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(0)
        });
        writer.submit(hold, Box::new(|_| {})).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (tx, rx) = std::sync::mpsc::channel();
        let values = [1i64, 0, 2, 3];
        for v in values {
            let tx = tx.clone();
            let work: Work = Box::new(move |c| run(c, "INSERT INTO t (v) VALUES (?1)", [v]));
            writer.submit(work, Box::new(move |r| tx.send((v, r.is_ok())).unwrap())).unwrap();
        }
        let answers: std::collections::HashMap<i64, bool> =
            (0..values.len()).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        let check = Connection::open(&path).unwrap();
        for v in values {
            let stored: i64 = check.query_row("SELECT COUNT(*) FROM t WHERE v = ?1", [v], |r| r.get(0)).unwrap();
            assert_eq!(answers[&v], stored == 1, "write {v}: answered ok = {}, stored = {stored}", answers[&v]);
        }
        assert!(!answers[&0] && answers[&2] && answers[&3], "{answers:?}: the writes after the failing one still land");
    }
}
