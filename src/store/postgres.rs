//! The shared store for several replicas (issue 7, first part): [`KvStore`] and [`Outbox`] on
//! PostgreSQL, with the same contract as the embedded [`crate::store::SqliteStore`] plus what
//! several workers on one database need: `due` *claims* the entries it hands out (row locks
//! with `SKIP LOCKED`, then a lease), so two replicas never deliver the same report at once,
//! and a replica that dies holding entries releases them when the lease runs out.
//!
//! Chosen with `store_url` (`SLUICE_STORE_URL=postgres://...`, see `crate::backend`).
//!
//! Values and bodies are TEXT, not JSONB: JSONB reorders keys, and reports must reach OpenPipe
//! byte for byte as they were built.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value;
use sluice_sdk::outbox::{Entry, KvWrite, NewEntry, Outbox, QueueStats};
use sluice_sdk::{KvStore, StoreError};
use tokio_postgres::Row;

use sluice_sdk::clock::{unix_ms as unix_now_ms, unix_secs as unix_now};

pub use super::pg_error::PgStoreError;

/// How long an entry handed out by `due` stays with its worker before another may take it.
/// The worker takes only what it starts at once and renews the lease of attempts in flight
/// every third of it, so the lease bounds how long a dead replica's reports wait, not how long
/// an attempt may take.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

/// Longest wait for a connection from the pool or a new one.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PgStore {
    pool: Pool,
    lease: Duration,
    /// Where it connects (no credentials), for errors.
    target: String,
    /// Opened to read what is there (`sluice check`): a database the server never used has no
    /// tables, and nothing is kept in it.
    to_read: bool,
}

/// In a URL, the user and password end at the one `@`, before any `/`, `?` or `#`.
fn credentials_are_escaped(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) else {
        return true; // key=value form: quoting rules of its own
    };
    match rest.rfind('@') {
        Some(at) => !rest[..at].contains(['@', '/', '?', '#']),
        None => true,
    }
}

/// ` at host:port (database d, user u)`: where sluice tried to connect, without the password.
fn target_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().or(config.get_user()).unwrap_or("?");
    format!(" at {host}:{port} (database {database}, user {})", config.get_user().unwrap_or("?"))
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::from_cause(e)
}

/// Whether the query failed on a table the schema does not have (yet).
fn no_such_table(e: &StoreError) -> bool {
    // The database's own error is down the chain (the cause is kept behind an `Arc`).
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(db) = c.downcast_ref::<tokio_postgres::error::DbError>() {
            return db.code() == &tokio_postgres::error::SqlState::UNDEFINED_TABLE;
        }
        cause = c.source();
    }
    false
}

/// Waiting, dead, and the birth of the oldest waiting entry: the columns of [`QueueStats`].
const QUEUE_STATS: &str = "COUNT(*) FILTER (WHERE dead_at_ms IS NULL), COUNT(*) FILTER (WHERE dead_at_ms IS NOT NULL),
     MIN(created_at_ms) FILTER (WHERE dead_at_ms IS NULL)";

const ENTRY_COLUMNS: &str = "id, kind, target, body, created_at_ms, attempts, next_attempt_at_ms, last_status, \
                             last_error, dead_at_ms";

fn entry(row: &Row) -> Result<Entry, StoreError> {
    let body: String = row.try_get(3).map_err(err)?;
    let ms = |i: usize| -> Result<u64, StoreError> { row.try_get::<_, i64>(i).map(|v| v.max(0) as u64).map_err(err) };
    Ok(Entry {
        id: row.try_get(0).map_err(err)?,
        kind: row.try_get(1).map_err(err)?,
        target: row.try_get(2).map_err(err)?,
        body: serde_json::from_str(&body).map_err(err)?,
        created_at_ms: ms(4)?,
        attempts: row.try_get::<_, i32>(5).map(|v| v.max(0) as u32).map_err(err)?,
        next_attempt_at_ms: ms(6)?,
        last_status: row.try_get::<_, Option<i32>>(7).map_err(err)?.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get(8).map_err(err)?,
        dead_at_ms: row.try_get::<_, Option<i64>>(9).map_err(err)?.map(|v| v.max(0) as u64),
    })
}

impl PgStore {
    /// Connects (a small pool), creates or upgrades the schema, and refuses a newer one.
    pub async fn connect(url: &str) -> Result<PgStore, PgStoreError> {
        Self::connect_with_lease(url, DEFAULT_LEASE).await
    }

    pub async fn connect_with_lease(url: &str, lease: Duration) -> Result<PgStore, PgStoreError> {
        let store = Self::pool(url, lease)?;
        let target = store.target.clone();
        super::pg_schema::migrate(&store.pool).await.map_err(|e| match e {
            PgStoreError::Connect(cause) => PgStoreError::Connect(format!("{target}{cause}")),
            other => other,
        })?;
        Ok(store)
    }

    /// A store to read, the schema left as it is (`sluice check`: a newer binary checking
    /// before a deploy must not migrate the schema under the replicas still running).
    pub fn connect_to_read(url: &str) -> Result<PgStore, PgStoreError> {
        Ok(PgStore { to_read: true, ..Self::pool(url, DEFAULT_LEASE)? })
    }

    /// The pool; no connection is made until the first query.
    fn pool(url: &str, lease: Duration) -> Result<PgStore, PgStoreError> {
        const FORM: &str = "the form is postgres://user:password@host:5432/database, with @ / : ? # in the \
                            password percent-encoded (%40 %2F %3A %3F %23)";
        if !credentials_are_escaped(url) {
            // Parsed anyway, a piece of the password would become the host or the database
            // name, and be shown in every error after: refuse without quoting it.
            return Err(PgStoreError::Connect(format!(": store_url does not parse as intended; {FORM}")));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| PgStoreError::Connect(format!(": store_url is not a PostgreSQL URL ({e}); {FORM}")))?;
        let target = target_of(&config);
        config.connect_timeout(OP_TIMEOUT).keepalives(true).keepalives_idle(Duration::from_secs(30));
        let manager = Manager::from_connect(
            config,
            super::pg_connect::ResolvingConnect::new(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        // Bounded waits: with the database gone, a hook or an answer fails over in seconds
        // instead of queueing behind connection attempts.
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(OP_TIMEOUT))
            .recycle_timeout(Some(OP_TIMEOUT))
            .build()
            .map_err(|e| PgStoreError::Connect(format!("{target}: {e}")))?;
        Ok(PgStore { pool, lease, target, to_read: false })
    }

    /// The schema version this binary brings.
    pub fn known_version() -> i32 {
        super::pg_schema::known_version()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(err)
    }

    /// Queued entries, dead letters and the oldest queued entry of every queue.
    pub async fn queues(&self) -> Result<Vec<QueueStats>, StoreError> {
        let rows = query_cached(
            &self.client().await?,
            &format!("SELECT queue, {QUEUE_STATS} FROM outbox GROUP BY queue ORDER BY queue"),
            &[],
        )
        .await?;
        let mut queues = rows.iter().map(stats).collect::<Result<Vec<_>, _>>()?;
        for q in queues.iter_mut().filter(|q| q.depth > 0) {
            let row = query_cached(
                &self.client().await?,
                "SELECT last_status, last_error FROM outbox WHERE queue = $1 AND dead_at_ms IS NULL
                 AND attempts > 0 ORDER BY attempts DESC, created_at_ms LIMIT 1",
                &[&q.queue],
            )
            .await?;
            if let Some(row) = row.first() {
                let status: Option<i32> = row.try_get(0).map_err(err)?;
                q.last_error = super::last_error(status.map(i64::from), row.try_get(1).map_err(err)?);
            }
        }
        Ok(queues)
    }

    /// Puts a queue's dead letters back in line with a fresh age; how many.
    pub async fn requeue_dead(&self, queue: &str) -> Result<u64, StoreError> {
        let now = unix_now_ms() as i64;
        execute_cached(
            &self.client().await?,
            "UPDATE outbox SET dead_at_ms = NULL, attempts = 0, next_attempt_at_ms = $2, created_at_ms = $2
                 WHERE queue = $1 AND dead_at_ms IS NOT NULL",
            &[&queue, &now],
        )
        .await
    }

    /// The shared valves of `pipeline_id`, seeding them with `local` (the replica's file) when
    /// no replica has yet: the text every replica must use, and its version.
    pub async fn seed_valves(&self, pipeline_id: &str, local: &str) -> Result<(String, i64), StoreError> {
        execute_cached(
            &self.client().await?,
            "INSERT INTO valves (pipeline_id, toml, version, updated_at_ms) VALUES ($1, $2, 1, $3)
             ON CONFLICT (pipeline_id) DO NOTHING",
            &[&pipeline_id, &local, &(unix_now_ms() as i64)],
        )
        .await?;
        self.valves_text(pipeline_id)
            .await?
            .ok_or_else(|| StoreError::new(format!("no shared valves for {pipeline_id}")))
    }

    /// Records an update accepted by this replica; its new version.
    pub async fn publish_valves(&self, pipeline_id: &str, toml: &str) -> Result<i64, StoreError> {
        let now = unix_now_ms() as i64;
        let row = query_one_cached(
            &self.client().await?,
            "INSERT INTO valves (pipeline_id, toml, version, updated_at_ms) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (pipeline_id) DO UPDATE
                     SET toml = EXCLUDED.toml, version = valves.version + 1, updated_at_ms = EXCLUDED.updated_at_ms
                 RETURNING version",
            &[&pipeline_id, &toml, &now],
        )
        .await?;
        row.try_get(0).map_err(err)
    }

    /// Every pipeline's shared valves version (polled often: no text).
    pub async fn valves_versions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = query_cached(&self.client().await?, "SELECT pipeline_id, version FROM valves", &[]).await?;
        rows.iter().map(|r| Ok((r.try_get(0).map_err(err)?, r.try_get(1).map_err(err)?))).collect()
    }

    /// One pipeline's shared valves text and its version.
    pub async fn valves_text(&self, pipeline_id: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row = query_opt_cached(
            &self.client().await?,
            "SELECT toml, version FROM valves WHERE pipeline_id = $1",
            &[&pipeline_id],
        )
        .await?;
        row.map(|r| Ok((r.try_get(0).map_err(err)?, r.try_get(1).map_err(err)?))).transpose()
    }

    /// Deletes expired key/value records; how many.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = unix_now() as i64;
        execute_cached(&self.client().await?, "DELETE FROM kv WHERE expires_at <= $1", &[&now]).await
    }
}

// Every statement is prepared once per connection and reused: preparing on each call doubled
// the round trips of every store operation (measured in the benchmark, docs/performance.md).
type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

async fn execute_cached(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    p: Params<'_>,
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(err)?;
    c.execute(&statement, p).await.map_err(err)
}

async fn query_cached(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    p: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(err)?;
    c.query(&statement, p).await.map_err(err)
}

async fn query_one_cached(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    p: Params<'_>,
) -> Result<Row, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(err)?;
    c.query_one(&statement, p).await.map_err(err)
}

async fn query_opt_cached(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    p: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await.map_err(err)?;
    c.query_opt(&statement, p).await.map_err(err)
}

fn stats(row: &Row) -> Result<QueueStats, StoreError> {
    Ok(QueueStats {
        queue: row.try_get(0).map_err(err)?,
        depth: row.try_get::<_, i64>(1).map_err(err)?.max(0) as u64,
        dead: row.try_get::<_, i64>(2).map_err(err)?.max(0) as u64,
        oldest_created_at_ms: row.try_get::<_, Option<i64>>(3).map_err(err)?.map(|v| v.max(0) as u64),
        last_error: None,
    })
}

async fn apply(tx: &impl deadpool_postgres::GenericClient, write: &KvWrite, now: u64) -> Result<(), StoreError> {
    match write {
        KvWrite::Put { namespace, key, value, ttl } => {
            let expires = now.saturating_add(ttl.as_secs()) as i64;
            execute_cached(
                tx,
                "INSERT INTO kv (namespace, key, value, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                &[namespace, key, &value.to_string(), &expires],
            )
            .await?;
        }
        KvWrite::Delete { namespace, key } => {
            execute_cached(tx, "DELETE FROM kv WHERE namespace = $1 AND key = $2", &[namespace, key]).await?;
        }
    }
    Ok(())
}

#[async_trait]
impl KvStore for PgStore {
    async fn put(&self, namespace: &str, key: &str, value: &Value, ttl: Duration) -> Result<(), StoreError> {
        let write = KvWrite::Put { namespace: namespace.to_string(), key: key.to_string(), value: value.clone(), ttl };
        apply(&self.client().await?, &write, unix_now()).await
    }

    async fn put_if(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&Value>,
        value: &Value,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = unix_now();
        let expires = now.saturating_add(ttl.as_secs()) as i64;
        let client = self.client().await?;
        // Values are the compact JSON `put` wrote, so text equality is value equality.
        let written = match expected {
            Some(old) => {
                execute_cached(
                    &client,
                    "UPDATE kv SET value = $3, expires_at = $4
                         WHERE namespace = $1 AND key = $2 AND value = $5 AND expires_at > $6",
                    &[&namespace, &key, &value.to_string(), &expires, &old.to_string(), &(now as i64)],
                )
                .await?
            }
            // Absent, or there but expired (which reads as absent).
            None => {
                execute_cached(
                    &client,
                    "INSERT INTO kv (namespace, key, value, expires_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
                         WHERE kv.expires_at <= $5",
                    &[&namespace, &key, &value.to_string(), &expires, &(now as i64)],
                )
                .await?
            }
        };
        Ok(written == 1)
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let now = unix_now() as i64;
        let row = match query_opt_cached(
            &self.client().await?,
            "SELECT value FROM kv WHERE namespace = $1 AND key = $2 AND expires_at > $3",
            &[&namespace, &key, &now],
        )
        .await
        {
            Err(e) if self.to_read && no_such_table(&e) => None,
            other => other?,
        };
        row.map(|r| serde_json::from_str(&r.try_get::<_, String>(0).map_err(err)?).map_err(err)).transpose()
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let write = KvWrite::Delete { namespace: namespace.to_string(), key: key.to_string() };
        apply(&self.client().await?, &write, unix_now()).await
    }

    async fn trim(&self, namespace: &str, keep: usize, max_bytes: u64) -> Result<usize, StoreError> {
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let n = execute_cached(
            &self.client().await?,
            "DELETE FROM kv WHERE namespace = $1 AND key IN (
                 SELECT key FROM (
                     SELECT key, ROW_NUMBER() OVER w AS n, SUM(octet_length(value)) OVER w AS total
                     FROM kv WHERE namespace = $1
                     WINDOW w AS (ORDER BY expires_at DESC, key ROWS UNBOUNDED PRECEDING)) ranked
                 WHERE n > $2 OR total > $3)",
            &[&namespace, &(keep as i64), &max_bytes],
        )
        .await?;
        Ok(n as usize)
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn enqueue(&self, queue: &str, entries: Vec<NewEntry>, kv: Vec<KvWrite>) -> Result<(), StoreError> {
        let (now, now_ms) = (unix_now(), unix_now_ms() as i64);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        for e in &entries {
            execute_cached(
                &tx,
                "INSERT INTO outbox (queue, id, kind, target, body, created_at_ms, next_attempt_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (queue, id) DO NOTHING",
                &[&queue, &e.id, &e.kind, &e.target, &e.body.to_string(), &now_ms],
            )
            .await?;
        }
        for w in &kv {
            apply(&tx, w, now).await?;
        }
        tx.commit().await.map_err(err)
    }

    /// Claims up to `limit` due entries for this worker: locked rows of other workers are
    /// skipped, and the claimed ones are not due again until the lease has passed (or the
    /// worker reschedules, completes or buries them).
    async fn due(&self, queue: &str, now_ms: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let lease_until = now_ms.saturating_add(self.lease.as_millis() as u64) as i64;
        let sql = format!(
            "UPDATE outbox o SET next_attempt_at_ms = $4
             FROM (SELECT queue, id FROM outbox
                   WHERE queue = $1 AND dead_at_ms IS NULL AND next_attempt_at_ms <= $2
                   ORDER BY next_attempt_at_ms, created_at_ms LIMIT $3
                   FOR UPDATE SKIP LOCKED) due
             WHERE o.queue = due.queue AND o.id = due.id
             RETURNING {}",
            ENTRY_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ")
        );
        let rows =
            query_cached(&self.client().await?, &sql, &[&queue, &(now_ms as i64), &(limit as i64), &lease_until])
                .await?;
        let mut out: Vec<Entry> = rows.iter().map(entry).collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    async fn renew(&self, queue: &str, ids: &[String], now_ms: u64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let until = now_ms.saturating_add(self.lease.as_millis() as u64) as i64;
        execute_cached(
            &self.client().await?,
            "UPDATE outbox SET next_attempt_at_ms = $3 WHERE queue = $1 AND id = ANY($2) AND dead_at_ms IS NULL",
            &[&queue, &ids, &until],
        )
        .await?;
        Ok(())
    }

    async fn next_due_at(&self, queue: &str) -> Result<Option<u64>, StoreError> {
        let row = query_one_cached(
            &self.client().await?,
            "SELECT MIN(next_attempt_at_ms) FROM outbox WHERE queue = $1 AND dead_at_ms IS NULL",
            &[&queue],
        )
        .await?;
        Ok(row.try_get::<_, Option<i64>>(0).map_err(err)?.map(|v| v.max(0) as u64))
    }

    async fn retry_later(
        &self,
        queue: &str,
        id: &str,
        next_attempt_at_ms: u64,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), StoreError> {
        execute_cached(
            &self.client().await?,
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = $3, last_status = $4, last_error = $5
                 WHERE queue = $1 AND id = $2",
            &[&queue, &id, &(next_attempt_at_ms as i64), &status.map(i32::from), &error],
        )
        .await?;
        Ok(())
    }

    async fn replace_body(&self, queue: &str, id: &str, body: &Value) -> Result<(), StoreError> {
        execute_cached(
            &self.client().await?,
            "UPDATE outbox SET body = $3 WHERE queue = $1 AND id = $2",
            &[&queue, &id, &body.to_string()],
        )
        .await?;
        Ok(())
    }

    async fn complete(&self, queue: &str, id: &str) -> Result<(), StoreError> {
        execute_cached(&self.client().await?, "DELETE FROM outbox WHERE queue = $1 AND id = $2", &[&queue, &id])
            .await?;
        Ok(())
    }

    async fn dead_letter(&self, queue: &str, id: &str, status: Option<u16>, reason: &str) -> Result<(), StoreError> {
        let now_ms = unix_now_ms() as i64;
        execute_cached(
            &self.client().await?,
            "UPDATE outbox SET dead_at_ms = COALESCE(dead_at_ms, $3), last_status = COALESCE($4, last_status), last_error = $5,
                     attempts = attempts + (CASE WHEN dead_at_ms IS NULL AND $4::integer IS NOT NULL THEN 1 ELSE 0 END)
                 WHERE queue = $1 AND id = $2",
            &[&queue, &id, &now_ms, &status.map(i32::from), &reason],
        )
        .await?;
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, StoreError> {
        let row = query_one_cached(
            &self.client().await?,
            &format!("SELECT $1::TEXT, {QUEUE_STATS} FROM outbox WHERE queue = $1"),
            &[&queue],
        )
        .await?;
        stats(&row)
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let rows = query_cached(
            &self.client().await?,
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM outbox WHERE queue = $1 AND dead_at_ms IS NOT NULL
                     ORDER BY dead_at_ms DESC LIMIT $2"
            ),
            &[&queue, &(limit as i64)],
        )
        .await?;
        rows.iter().map(entry).collect()
    }
}
