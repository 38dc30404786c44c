//! The embedded store: one SQLite file in the data dir (WAL, `synchronous=FULL`), so records a
//! pipeline was told are written survive a crash or a `kill -9`.
//!
//! Writes go to one writer thread that commits them in groups (`sqlite_writer.rs`). Reads use
//! their own connection on the blocking pool; WAL lets them run beside the writer.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use sluice_sdk::outbox::{Entry, KvWrite, NewEntry};
use sluice_sdk::{KvStore, Outbox, QueueStats, StoreError};

use sluice_sdk::clock::{unix_ms as unix_now_ms, unix_secs as unix_now};

use super::admin::StoreAdmin;
use super::sqlite_writer::{run, stopped as writer_stopped, Writer};

/// File name inside the data dir.
pub const STORE_FILE: &str = "sluice.db";

fn err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::from_cause(e)
}

/// The reader connection's lock is poisoned only if a read panicked while holding it.
fn poisoned<T>(_: std::sync::PoisonError<T>) -> StoreError {
    StoreError::new("the store's reader failed earlier")
}

#[derive(Clone)]
pub struct SqliteStore {
    reader: Arc<Mutex<Connection>>,
    writer: Writer,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // SQLite gives the -wal and -shm files the database file's permissions.
        crate::private::file(path).map_err(err)?;
        // The rollback journal too: SQLite applies one it finds before anything else.
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = Path::new(&side);
            if crate::private::own_file(side).map_err(err)? {
                crate::private::tighten(side, 0o600).map_err(err)?;
            }
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                PRIMARY KEY (namespace, key)
            );
            CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at);
            CREATE TABLE IF NOT EXISTS outbox (
                queue TEXT NOT NULL,
                id TEXT NOT NULL,
                kind TEXT NOT NULL,
                target TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at_ms INTEGER NOT NULL,
                last_status INTEGER,
                last_error TEXT,
                dead_at_ms INTEGER,
                PRIMARY KEY (queue, id)
            );
            CREATE INDEX IF NOT EXISTS outbox_due ON outbox (queue, dead_at_ms, next_attempt_at_ms);",
        )
        .map_err(err)?;
        let reader = Connection::open(path).map_err(err)?;
        reader.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        let writer = Writer::start(conn)?;
        let store = SqliteStore { reader: Arc::new(Mutex::new(reader)), writer };
        store.purge_expired()?;
        Ok(store)
    }

    /// Every queue that holds live or dead entries, for `sluice outbox` and the logs.
    pub fn queues(&self) -> Result<Vec<QueueStats>, StoreError> {
        let conn = self.reader.lock().map_err(poisoned)?;
        let mut stmt = conn
            .prepare(&format!("SELECT queue, {QUEUE_STATS} FROM outbox GROUP BY queue ORDER BY queue"))
            .map_err(err)?;
        let rows = stmt.query_map([], stats_row).map_err(err)?;
        let mut queues = rows.collect::<Result<Vec<_>, _>>().map_err(err)?;
        for q in queues.iter_mut().filter(|q| q.depth > 0) {
            q.last_error = conn
                .query_row(
                    "SELECT last_status, last_error FROM outbox WHERE queue = ?1 AND dead_at_ms IS NULL
                     AND attempts > 0 ORDER BY attempts DESC, created_at_ms LIMIT 1",
                    params![q.queue],
                    |row| Ok(super::last_error(row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(err)?
                .flatten();
        }
        Ok(queues)
    }

    /// Puts a queue's dead letters back in line with a fresh age, for `sluice outbox --requeue`.
    pub fn requeue_dead(&self, queue: &str) -> Result<usize, StoreError> {
        let queue = queue.to_string();
        let now = unix_now_ms() as i64;
        self.write_blocking(move |c| {
            run(
                c,
                "UPDATE outbox SET dead_at_ms = NULL, attempts = 0, next_attempt_at_ms = ?2, created_at_ms = ?2
                 WHERE queue = ?1 AND dead_at_ms IS NOT NULL",
                params![queue, now],
            )
        })
    }

    /// Removes expired records; run at start-up and every few minutes (reads skip them anyway).
    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = unix_now() as i64;
        self.write_blocking(move |c| run(c, "DELETE FROM kv WHERE expires_at <= ?1", params![now]))
    }

    fn submit(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<usize> + Send + 'static,
        reply: impl FnOnce(Result<usize, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.writer.submit(Box::new(work), Box::new(reply))
    }

    /// A write, answered once it is durable.
    async fn write(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<usize> + Send + 'static,
    ) -> Result<usize, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(work, move |r| {
            let _ = tx.send(r);
        })?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// The same for callers outside the runtime (start-up, the CLI, the sweeper's thread).
    fn write_blocking(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<usize> + Send + 'static,
    ) -> Result<usize, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(work, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| writer_stopped())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(poisoned)?;
            f(&conn).map_err(err)
        })
        .await
        .map_err(err)?
    }
}

fn blocking_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::new(format!("the store's work stopped: {}", sluice_sdk::join_failure(&e)))
}

#[async_trait]
impl StoreAdmin for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn queues(&self) -> Result<Vec<QueueStats>, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.queues()).await.map_err(blocking_err)?
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.purge_expired().map(|n| n as u64)).await.map_err(blocking_err)?
    }

    async fn requeue_dead(&self, queue: &str) -> Result<u64, StoreError> {
        let (this, queue) = (self.clone(), queue.to_string());
        tokio::task::spawn_blocking(move || this.requeue_dead(&queue).map(|n| n as u64)).await.map_err(blocking_err)?
    }
}

/// A key's live value as stored (JSON text), read on `conn`; also the read-only reader's.
pub(super) fn read_value(conn: &Connection, namespace: &str, key: &str, now: i64) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2 AND expires_at > ?3",
        params![namespace, key, now],
        |row| row.get(0),
    )
    .optional()
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn put(&self, namespace: &str, key: &str, value: &Value, ttl: Duration) -> Result<(), StoreError> {
        let row = KvRow::put(namespace, key, value, ttl, unix_now());
        self.write(move |c| row.apply(c)).await.map(|_| ())
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let (ns, key) = (namespace.to_string(), key.to_string());
        let now = unix_now() as i64;
        let text: Option<String> = self.read(move |c| read_value(c, &ns, &key, now)).await?;
        text.map(|t| serde_json::from_str(&t).map_err(err)).transpose()
    }

    async fn trim(&self, namespace: &str, keep: usize, max_bytes: u64) -> Result<usize, StoreError> {
        let ns = namespace.to_string();
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        self.write(move |c| {
            run(
                c,
                "DELETE FROM kv WHERE namespace = ?1 AND key IN (
                    SELECT key FROM (
                        SELECT key, ROW_NUMBER() OVER w AS n, SUM(length(CAST(value AS BLOB))) OVER w AS total
                        FROM kv WHERE namespace = ?1
                        WINDOW w AS (ORDER BY expires_at DESC, key ROWS UNBOUNDED PRECEDING))
                    WHERE n > ?2 OR total > ?3)",
                params![ns, keep as i64, max_bytes],
            )
        })
        .await
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let row = KvRow::Delete { namespace: namespace.to_string(), key: key.to_string() };
        self.write(move |c| row.apply(c)).await.map(|_| ())
    }
}

/// A key/value change ready for the writer thread: values are serialised (and expiries
/// computed) by the caller, so the one writer spends its time on SQL only.
enum KvRow {
    Put { namespace: String, key: String, text: String, expires_at: i64 },
    Delete { namespace: String, key: String },
}

impl KvRow {
    fn put(namespace: &str, key: &str, value: &Value, ttl: Duration, now: u64) -> KvRow {
        KvRow::Put {
            namespace: namespace.to_string(),
            key: key.to_string(),
            text: value.to_string(),
            expires_at: now.saturating_add(ttl.as_secs()) as i64,
        }
    }

    fn from_write(write: KvWrite, now: u64) -> KvRow {
        match write {
            KvWrite::Put { namespace, key, value, ttl } => KvRow::put(&namespace, &key, &value, ttl, now),
            KvWrite::Delete { namespace, key } => KvRow::Delete { namespace, key },
        }
    }

    fn apply(&self, c: &Connection) -> rusqlite::Result<usize> {
        match self {
            KvRow::Put { namespace, key, text, expires_at } => run(
                c,
                "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                params![namespace, key, text, expires_at],
            ),
            KvRow::Delete { namespace, key } => {
                run(c, "DELETE FROM kv WHERE namespace = ?1 AND key = ?2", params![namespace, key])
            }
        }
    }
}

/// Waiting, dead, and the birth of the oldest waiting entry: the columns of [`QueueStats`].
const QUEUE_STATS: &str = "SUM(dead_at_ms IS NULL), SUM(dead_at_ms IS NOT NULL),
     MIN(CASE WHEN dead_at_ms IS NULL THEN created_at_ms END)";

const ENTRY_COLUMNS: &str =
    "id, kind, target, body, created_at_ms, attempts, next_attempt_at_ms, last_status, last_error, dead_at_ms";

fn entry_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let body: String = row.get(3)?;
    Ok(Entry {
        id: row.get(0)?,
        kind: row.get(1)?,
        target: row.get(2)?,
        // A row this server wrote is always JSON; a damaged one is delivered as a string
        // rather than stopping the queue.
        body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
        created_at_ms: row.get::<_, i64>(4)? as u64,
        attempts: row.get::<_, i64>(5)? as u32,
        next_attempt_at_ms: row.get::<_, i64>(6)? as u64,
        last_status: row.get::<_, Option<i64>>(7)?.map(|s| s as u16),
        last_error: row.get(8)?,
        dead_at_ms: row.get::<_, Option<i64>>(9)?.map(|s| s as u64),
    })
}

fn stats_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<QueueStats> {
    Ok(QueueStats {
        queue: row.get(0)?,
        depth: row.get::<_, Option<i64>>(1)?.unwrap_or(0) as u64,
        dead: row.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
        oldest_created_at_ms: row.get::<_, Option<i64>>(3)?.map(|v| v as u64),
        last_error: None,
    })
}

fn dead_letters(conn: &Connection, queue: &str, limit: usize) -> rusqlite::Result<Vec<Entry>> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM outbox WHERE queue = ?1 AND dead_at_ms IS NOT NULL ORDER BY dead_at_ms DESC LIMIT ?2"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![queue, limit as i64], entry_row)?;
    rows.collect()
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn enqueue(&self, queue: &str, entries: Vec<NewEntry>, kv: Vec<KvWrite>) -> Result<(), StoreError> {
        let queue = queue.to_string();
        let now_ms = unix_now_ms() as i64;
        let now = unix_now();
        let entries: Vec<(NewEntry, String)> = entries
            .into_iter()
            .map(|e| {
                let body = e.body.to_string();
                (e, body)
            })
            .collect();
        let rows: Vec<KvRow> = kv.into_iter().map(|w| KvRow::from_write(w, now)).collect();
        // One savepoint in the writer's group: all of it or none of it.
        self.write(move |tx| {
            for (e, body) in &entries {
                run(
                    tx,
                    "INSERT INTO outbox (queue, id, kind, target, body, created_at_ms, next_attempt_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT (queue, id) DO NOTHING",
                    params![queue, e.id, e.kind, e.target, body, now_ms],
                )?;
            }
            for row in &rows {
                row.apply(tx)?;
            }
            Ok(entries.len())
        })
        .await
        .map(|_| ())
    }

    async fn due(&self, queue: &str, now_ms: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let queue = queue.to_string();
        self.read(move |c| {
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM outbox WHERE queue = ?1 AND dead_at_ms IS NULL AND next_attempt_at_ms <= ?2
                 ORDER BY next_attempt_at_ms, created_at_ms LIMIT ?3"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params![queue, now_ms as i64, limit as i64], entry_row)?;
            rows.collect()
        })
        .await
    }

    async fn next_due_at(&self, queue: &str) -> Result<Option<u64>, StoreError> {
        let queue = queue.to_string();
        let at: Option<i64> = self
            .read(move |c| {
                c.query_row(
                    "SELECT MIN(next_attempt_at_ms) FROM outbox WHERE queue = ?1 AND dead_at_ms IS NULL",
                    params![queue],
                    |row| row.get(0),
                )
            })
            .await?;
        Ok(at.map(|v| v.max(0) as u64))
    }

    async fn retry_later(
        &self,
        queue: &str,
        id: &str,
        next_attempt_at_ms: u64,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), StoreError> {
        let (queue, id, error) = (queue.to_string(), id.to_string(), error.to_string());
        self.write(move |c| {
            run(
                c,
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = ?3, last_status = ?4, last_error = ?5
                 WHERE queue = ?1 AND id = ?2",
                params![queue, id, next_attempt_at_ms as i64, status.map(i64::from), error],
            )
        })
        .await
        .map(|_| ())
    }

    async fn replace_body(&self, queue: &str, id: &str, body: &Value) -> Result<(), StoreError> {
        let (queue, id, body) = (queue.to_string(), id.to_string(), body.to_string());
        self.write(move |c| {
            run(c, "UPDATE outbox SET body = ?3 WHERE queue = ?1 AND id = ?2", params![queue, id, body])
        })
        .await
        .map(|_| ())
    }

    async fn complete(&self, queue: &str, id: &str) -> Result<(), StoreError> {
        let (queue, id) = (queue.to_string(), id.to_string());
        self.write(move |c| run(c, "DELETE FROM outbox WHERE queue = ?1 AND id = ?2", params![queue, id]))
            .await
            .map(|_| ())
    }

    async fn dead_letter(&self, queue: &str, id: &str, status: Option<u16>, reason: &str) -> Result<(), StoreError> {
        let (queue, id, reason) = (queue.to_string(), id.to_string(), reason.to_string());
        let now_ms = unix_now_ms() as i64;
        self.write(move |c| {
            run(
                c,
                "UPDATE outbox SET dead_at_ms = COALESCE(dead_at_ms, ?3), last_status = COALESCE(?4, last_status), last_error = ?5,
                     attempts = attempts + (dead_at_ms IS NULL AND ?4 IS NOT NULL)
                 WHERE queue = ?1 AND id = ?2",
                params![queue, id, now_ms, status.map(i64::from), reason],
            )
        })
        .await
        .map(|_| ())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, StoreError> {
        let q = queue.to_string();
        let stats = self
            .read(move |c| {
                c.query_row(&format!("SELECT ?1, {QUEUE_STATS} FROM outbox WHERE queue = ?1"), params![q], stats_row)
            })
            .await?;
        Ok(stats)
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let queue = queue.to_string();
        self.read(move |c| dead_letters(c, &queue, limit)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopening_and_expire() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(err)?;
        let path = dir.path().join(STORE_FILE);
        let store = SqliteStore::open(&path)?;
        store.put("ns", "a", &serde_json::json!({"x": 1}), Duration::from_secs(60)).await?;
        store.put("ns", "gone", &serde_json::json!(1), Duration::ZERO).await?;
        drop(store);
        let store = SqliteStore::open(&path)?;
        assert_eq!(store.get("ns", "a").await?, Some(serde_json::json!({"x": 1})));
        assert_eq!(store.get("other", "a").await?, None);
        assert_eq!(store.get("ns", "gone").await?, None);
        store.delete("ns", "a").await?;
        assert_eq!(store.get("ns", "a").await?, None);

        for (i, ttl) in [300u64, 100, 200, 400].iter().enumerate() {
            store.put("bounded", &format!("k{i}"), &serde_json::json!(i), Duration::from_secs(*ttl)).await?;
        }
        assert_eq!(store.trim("bounded", 2, u64::MAX).await?, 2, "the two that expire first go");
        assert_eq!(store.get("bounded", "k1").await?, None);
        assert_eq!(store.get("bounded", "k2").await?, None);
        assert_eq!(store.get("bounded", "k3").await?, Some(serde_json::json!(3)));
        assert_eq!(store.trim("bounded", 2, u64::MAX).await?, 0);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_commit_in_groups_and_a_failing_write_fails_alone() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(err)?;
        let store = SqliteStore::open(&dir.path().join(STORE_FILE))?;
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.put("ns", &format!("k{i}"), &serde_json::json!(i), Duration::from_secs(60)).await
            }));
        }
        let broken = store.write(|c| run(c, "INSERT INTO no_such_table VALUES (1)", [])).await;
        let panicked = store
            .write(|_| {
                let v: Vec<usize> = Vec::new();
                Ok(v[1])
            })
            .await;
        assert!(panicked.is_err(), "a panicking write fails alone");
        for t in tasks {
            t.await.map_err(err)??;
        }
        assert!(broken.is_err());
        for i in 0..64 {
            assert_eq!(store.get("ns", &format!("k{i}")).await?, Some(serde_json::json!(i)));
        }
        store.put("ns", "after", &serde_json::json!(true), Duration::from_secs(60)).await?;
        assert_eq!(store.get("ns", "after").await?, Some(serde_json::json!(true)), "the writer lives on");
        Ok(())
    }

    fn entry(id: &str) -> NewEntry {
        NewEntry { id: id.into(), kind: "report".into(), target: "/report".into(), body: serde_json::json!({"n": id}) }
    }

    #[tokio::test]
    async fn outbox_entries_survive_reopening_and_move_through_their_states() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(err)?;
        let path = dir.path().join(STORE_FILE);
        let store = SqliteStore::open(&path)?;
        let put = KvWrite::Put {
            namespace: "ns".into(),
            key: "k".into(),
            value: serde_json::json!(1),
            ttl: Duration::from_secs(60),
        };
        store.enqueue("q", vec![entry("a"), entry("b"), entry("c")], vec![put]).await?;
        // The same id twice is one entry: a retried enqueue cannot duplicate work.
        store.enqueue("q", vec![entry("a")], vec![]).await?;
        drop(store);

        let store = SqliteStore::open(&path)?;
        assert_eq!(store.get("ns", "k").await?, Some(serde_json::json!(1)));
        let now = unix_now_ms();
        let due = store.due("q", now, 10).await?;
        assert_eq!(due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(due[0].body, serde_json::json!({"n": "a"}));

        store.retry_later("q", "a", now + 60_000, Some(503), "HTTP 503").await?;
        store.complete("q", "b").await?;
        store.dead_letter("q", "c", Some(400), "bad tags").await?;
        assert!(store.due("q", now, 10).await?.is_empty());
        assert_eq!(store.next_due_at("q").await?, Some(now + 60_000));
        let retried = store.due("q", now + 60_000, 10).await?;
        assert_eq!((retried[0].attempts, retried[0].last_status), (1, Some(503)));

        let stats = store.stats("q").await?;
        assert_eq!((stats.depth, stats.dead), (1, 1));
        let dead = store.dead_letters("q", 10).await?;
        assert_eq!((dead[0].id.as_str(), dead[0].last_error.as_deref()), ("c", Some("bad tags")));
        assert_eq!(store.queues()?.len(), 1);
        assert_eq!(store.stats("empty").await?.depth, 0);
        Ok(())
    }
}
