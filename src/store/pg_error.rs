//! Why the PostgreSQL store could not be opened: where it tried and why (never the password),
//! a schema newer than this binary, or a migration the database refused.

#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    #[error("cannot connect to PostgreSQL{0}")]
    Connect(String),
    #[error("the database's schema is version {found}, newer than this sluice knows ({known}); upgrade sluice")]
    NewerSchema { found: i32, known: i32 },
    #[error("migrating the schema failed: {0}")]
    Migration(String),
}
