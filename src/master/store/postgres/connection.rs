//! The PostgreSQL store's connections: the pool every call takes one
//! from, how a call runs a statement, and how the database's errors read
//! as the store's.

use super::schema;
use crate::master::store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Connections in the pool: enough for the DB endpoints' concurrency on a
/// small server without crowding PostgreSQL's default 100.
const POOL_SIZE: usize = 16;

/// How long a new connection may take (unless the URL says).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a call waits for a free connection of the pool.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The SQLSTATE of a write the fence refused (schema step 4).
const FENCED: &str = "MP001";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message says what went wrong; its Display alone is
        // often just "db error".
        match e.as_db_error() {
            Some(db) if db.code().code() == FENCED => StoreError::Fenced(db.message().to_owned()),
            Some(db) => StoreError::Backend(format!("postgres: {}", db.message())),
            None => StoreError::Backend(format!("postgres: {}", crate::causes::chain(&e))),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => StoreError::Backend(format!("postgres pool: {e}")),
        }
    }
}

/// What [`PostgresStore::epoch`] holds while the store takes no part in
/// leadership: its sessions say no epoch and are not fenced.
pub(super) const UNFENCED: i64 = i64::MIN;

/// The PostgreSQL backend.
pub struct PostgresStore {
    pub(super) pool: Pool,
    /// The epoch every new connection writes for ([`super::lease`]).
    pub(super) epoch: Arc<AtomicI64>,
    /// When the epoch last changed: a connection made before it says an
    /// old epoch and is closed rather than reused.
    pub(super) fenced_at: Arc<Mutex<Instant>>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`, or
    /// any form tokio-postgres takes) and brings the schema up to date.
    ///
    /// Fails when the URL does not parse, the server cannot be reached or
    /// refuses the login, or a migration fails (then nothing of it stays:
    /// each runs in one transaction).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Backend(format!("postgres URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let epoch = Arc::new(AtomicI64::new(UNFENCED));
        let said = Arc::clone(&epoch);
        let fenced_at = Arc::new(Mutex::new(Instant::now()));
        let since = Arc::clone(&fenced_at);
        // A database that is down or saturated fails requests within these,
        // as a store error, rather than holding them.
        let pool = Pool::builder(manager)
            .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                let epoch = said.load(Ordering::SeqCst);
                Box::pin(async move {
                    if epoch != UNFENCED {
                        let set = format!("SET meshplay.epoch = '{epoch}'");
                        client
                            .batch_execute(&set)
                            .await
                            .map_err(deadpool_postgres::HookError::Backend)?;
                    }
                    Ok(())
                })
            }))
            // A connection that was out when the epoch changed comes back
            // saying the old one; it is closed, not lent again.
            .pre_recycle(deadpool_postgres::Hook::sync_fn(move |_, metrics| {
                if metrics.created < *since.lock().unwrap() {
                    return Err(deadpool_postgres::HookError::message(
                        "made before the epoch changed",
                    ));
                }
                Ok(())
            }))
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let store = PostgresStore {
            pool,
            epoch,
            fenced_at,
        };
        schema::migrate(&store.pool).await?;
        Ok(store)
    }

    /// Runs `f` to its end from synchronous code (the trait's reads):
    /// they are called on blocking threads, where waiting is allowed.
    pub(super) fn wait<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Backend("postgres store used outside the runtime".into()))?;
        tokio::task::block_in_place(|| handle.block_on(f))
    }

    /// A connection of the pool, for a transaction.
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }
}
