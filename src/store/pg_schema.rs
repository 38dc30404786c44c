//! The PostgreSQL store's schema: versioned steps run at start, one replica at a time under an
//! advisory lock; a schema newer than this binary knows is refused.

use deadpool_postgres::Pool;

use super::pg_error::PgStoreError;

/// The schema, one step per version. Append; never edit a released step.
const MIGRATIONS: &[&str] = &[
    // 1: key/value records and the outbox, as in the embedded store.
    "CREATE TABLE kv (
         namespace TEXT NOT NULL,
         key TEXT NOT NULL,
         value TEXT NOT NULL,
         expires_at BIGINT NOT NULL,
         PRIMARY KEY (namespace, key)
     );
     CREATE INDEX kv_expiry ON kv (expires_at);
     CREATE TABLE outbox (
         queue TEXT NOT NULL,
         id TEXT NOT NULL,
         kind TEXT NOT NULL,
         target TEXT NOT NULL,
         body TEXT NOT NULL,
         created_at_ms BIGINT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         next_attempt_at_ms BIGINT NOT NULL,
         last_status INTEGER,
         last_error TEXT,
         dead_at_ms BIGINT,
         PRIMARY KEY (queue, id)
     );
     CREATE INDEX outbox_due ON outbox (queue, next_attempt_at_ms) WHERE dead_at_ms IS NULL;",
    // 2: valves shared by the replicas: the TOML text of each pipeline's file, versioned.
    "CREATE TABLE valves (
         pipeline_id TEXT PRIMARY KEY,
         toml TEXT NOT NULL,
         version BIGINT NOT NULL,
         updated_at_ms BIGINT NOT NULL
     );",
];

/// Serialises concurrent migrations of replicas starting together (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365; // "sluice"

/// The schema version this binary brings.
pub fn known_version() -> i32 {
    MIGRATIONS.len() as i32
}

/// Creates or upgrades the schema in one transaction, under the lock.
pub(super) async fn migrate(pool: &Pool) -> Result<(), PgStoreError> {
    let mut client =
        pool.get().await.map_err(|e| PgStoreError::Connect(format!(": {}", sluice_sdk::error_chain(&e))))?;
    let tx = client.transaction().await.map_err(|e| PgStoreError::Migration(e.to_string()))?;
    // The database's own words ("db error" alone named nothing; found by a red team).
    let step = |e: tokio_postgres::Error| {
        use tokio_postgres::error::SqlState;
        PgStoreError::Migration(match e.as_db_error() {
            Some(db) if db.code() == &SqlState::LOCK_NOT_AVAILABLE => {
                "another replica held the schema's lock for two minutes: is one stuck starting?".to_string()
            }
            // Tables of sluice's names that are not sluice's.
            Some(db)
                if [SqlState::DUPLICATE_TABLE, SqlState::DUPLICATE_COLUMN, SqlState::UNDEFINED_COLUMN]
                    .contains(db.code()) =>
            {
                format!("{}: sluice needs a database of its own", db.message())
            }
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })
    };
    let free: bool =
        tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(step)?.get(0);
    if !free {
        // Another replica migrating takes a moment; one stuck holding the lock is said, not
        // waited for without end.
        tracing::info!("another replica is migrating the store's schema; waiting up to two minutes");
        tx.batch_execute("SET LOCAL lock_timeout = '120s'").await.map_err(step)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(step)?;
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS sluice_schema (version INTEGER NOT NULL)").await.map_err(step)?;
    let found: i32 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM sluice_schema", &[]).await.map_err(step)?.get(0);
    let known = known_version();
    if found > known {
        return Err(PgStoreError::NewerSchema { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await.map_err(step)?;
        tx.execute("INSERT INTO sluice_schema (version) VALUES ($1)", &[&(i as i32 + 1)]).await.map_err(step)?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    tx.commit().await.map_err(step)
}
