//! The PostgreSQL backend (`--store postgres://...`): the same [`Store`]
//! on a database that many masters' operators already run, back up and
//! replicate.
//!
//! A pool of connections (deadpool-postgres) serves every call. Writes are
//! single statements in autocommit, so an acknowledged write is committed
//! (with the server's default `synchronous_commit = on`, flushed to its
//! WAL); reads are the trait's synchronous calls, run on the blocking
//! thread the caller is already on ([`super::blocking`]).
//!
//! Tables ([`schema::MIGRATIONS`], applied in order at start, each once, under an
//! advisory lock so that two masters starting together do not race):
//!
//! | table | primary key | payload |
//! |---|---|---|
//! | `kv` | tenant type, tenant id, scope, key | value, created/updated |
//! | `global_kv` | scope, key, version | the entry; its owner in columns |
//! | `tenant_states` | tenant type, tenant id | the state entry |
//! | `catalogue` | `plugin/<name>`, `filter/<name>` | bytes |
//! | `tokens` | id | the stored token |
//! | `audit` | seq | the entry |
//! | `vars` | plugin, tenant, name ([`StoredVar::key`]) | the stored variable |
//! | `timers` | id (indexed by due time and by tenant) | the timer, in columns |
//! | `schedules` | tenant type, tenant id, name | the stored schedule |
//!
//! Scopes and keys are `bytea`, so they order byte by byte as in sled
//! (`Find` pages the same way on both) and may hold any byte, NUL
//! included, which `text` refuses; tenant parts are `text COLLATE "C"`.
//! Values are MessagePack, as in sled: `jsonb` would refuse `\u0000` in a
//! string and renumber floats, and `store copy` moves records unchanged.
//!
//! Modules:
//!
//! - `connection`: the PostgreSQL store's connections;
//! - [`lease`]: leadership among masters that share one database;
//! - [`schema`]: the PostgreSQL store's schema and how a database gets it.

use super::keys::{decode, encode, prefix_end};
use super::pager::Pager;
use super::records::{AuditRecord, TokenRecord};
use super::{GlobalDelete, Store, StoreError, StoreFuture, StoredToken, StoredVar};
use crate::mesophyll::db::{GlobalEntry, KvRecord, TenantStateEntry, TenantStatesPage};
use crate::mesophyll::message::{Tenant, TenantState};
use crate::rest::AuditEntry;
mod connection;
pub mod lease;
pub mod schema;
mod timers;

pub use connection::PostgresStore;

/// Records a `kv_scan` reads per round trip.
const PAGE: i64 = 256;

fn kv_record(row: &tokio_postgres::Row) -> Result<KvRecord, StoreError> {
    let text = |i: usize| {
        String::from_utf8(row.get::<_, Vec<u8>>(i))
            .map_err(|e| StoreError::Corrupt(format!("a stored scope or key: {e}")))
    };
    Ok(KvRecord {
        scope: text(0)?,
        key: text(1)?,
        value: decode(row.get::<_, &[u8]>(2))?,
        created_at: row.get(3),
        updated_at: row.get(4),
    })
}

impl Store for PostgresStore {
    fn kv_get(
        &self,
        tenant: &Tenant,
        scope: &str,
        key: &str,
    ) -> Result<Option<KvRecord>, StoreError> {
        self.wait(async {
            let rows = self
                .query(
                    "SELECT scope, key, value, created_at, updated_at FROM kv
                     WHERE tenant_type = $1 AND tenant_id = $2 AND scope = $3 AND key = $4",
                    &[&tenant.kind, &tenant.id, &scope.as_bytes(), &key.as_bytes()],
                )
                .await?;
            rows.first().map(kv_record).transpose()
        })
    }

    fn kv_set<'a>(
        &'a self,
        tenant: &'a Tenant,
        scope: &'a str,
        key: &'a str,
        value: serde_json::Value,
        now: i64,
    ) -> StoreFuture<'a, KvRecord> {
        Box::pin(async move {
            // One statement keeps created_at across updates, with no
            // read-modify-write race.
            let rows = self
                .query(
                    "INSERT INTO kv AS k VALUES ($1, $2, $3, $4, $5, $6, $6)
                     ON CONFLICT (tenant_type, tenant_id, scope, key)
                     DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
                     RETURNING k.created_at",
                    &[
                        &tenant.kind,
                        &tenant.id,
                        &scope.as_bytes(),
                        &key.as_bytes(),
                        &encode(&value),
                        &now,
                    ],
                )
                .await?;
            Ok(KvRecord {
                scope: scope.to_owned(),
                key: key.to_owned(),
                value,
                created_at: rows.first().map_or(now, |r| r.get(0)),
                updated_at: now,
            })
        })
    }

    fn kv_delete<'a>(
        &'a self,
        tenant: &'a Tenant,
        scope: &'a str,
        key: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let rows = self
                .query(
                    "DELETE FROM kv WHERE tenant_type = $1 AND tenant_id = $2
                     AND scope = $3 AND key = $4 RETURNING 1",
                    &[&tenant.kind, &tenant.id, &scope.as_bytes(), &key.as_bytes()],
                )
                .await?;
            Ok(!rows.is_empty())
        })
    }

    fn kv_scan(
        &self,
        tenant: &Tenant,
        scope: &str,
        prefix: &str,
        after: Option<&str>,
        keep: &mut dyn FnMut(KvRecord) -> bool,
    ) -> Result<(), StoreError> {
        // Every key that starts with `prefix` lies in [prefix, end).
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        if let Some(a) = after {
            let mut past = a.as_bytes().to_vec();
            past.push(0); // the least key after `a`
            from = from.max(past);
        }
        loop {
            let rows = self.wait(self.query(
                "SELECT scope, key, value, created_at, updated_at FROM kv
                 WHERE tenant_type = $1 AND tenant_id = $2 AND scope = $3
                 AND key >= $4 AND ($5::bytea IS NULL OR key < $5)
                 ORDER BY key LIMIT $6",
                &[
                    &tenant.kind,
                    &tenant.id,
                    &scope.as_bytes(),
                    &from,
                    &end,
                    &PAGE,
                ],
            ))?;
            for row in &rows {
                if !keep(kv_record(row)?) {
                    return Ok(());
                }
            }
            let Some(last) = rows.last().filter(|_| rows.len() as i64 == PAGE) else {
                return Ok(());
            };
            from = last.get::<_, Vec<u8>>(1);
            from.push(0);
        }
    }

    fn kv_scopes(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        let rows = self.wait(self.query(
            "SELECT DISTINCT scope FROM kv WHERE tenant_type = $1 AND tenant_id = $2 ORDER BY scope",
            &[&tenant.kind, &tenant.id],
        ))?;
        rows.iter()
            .map(|r| {
                String::from_utf8(r.get(0))
                    .map_err(|e| StoreError::Corrupt(format!("a stored scope: {e}")))
            })
            .collect()
    }

    fn kv_all(&self, keep: &mut dyn FnMut(Tenant, KvRecord) -> bool) -> Result<(), StoreError> {
        // Keyset pages in primary-key order: a large store is never one
        // result set in memory.
        let mut from: Option<(String, String, Vec<u8>, Vec<u8>)> = None;
        loop {
            let rows = match &from {
                None => self.wait(self.query(
                    "SELECT scope, key, value, created_at, updated_at, tenant_type, tenant_id
                     FROM kv ORDER BY tenant_type, tenant_id, scope, key LIMIT $1",
                    &[&PAGE],
                ))?,
                Some((kind, id, scope, key)) => self.wait(self.query(
                    "SELECT scope, key, value, created_at, updated_at, tenant_type, tenant_id
                     FROM kv WHERE (tenant_type, tenant_id, scope, key) > ($1, $2, $3, $4)
                     ORDER BY tenant_type, tenant_id, scope, key LIMIT $5",
                    &[kind, id, scope, key, &PAGE],
                ))?,
            };
            for row in &rows {
                let tenant = Tenant::new(row.get::<_, String>(5), row.get::<_, String>(6));
                if !keep(tenant, kv_record(row)?) {
                    return Ok(());
                }
            }
            let Some(last) = rows.last().filter(|_| rows.len() as i64 == PAGE) else {
                return Ok(());
            };
            from = Some((last.get(5), last.get(6), last.get(0), last.get(1)));
        }
    }

    fn kv_import<'a>(&'a self, tenant: &'a Tenant, record: &'a KvRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.query(
                "INSERT INTO kv VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (tenant_type, tenant_id, scope, key) DO UPDATE
                 SET value = excluded.value, created_at = excluded.created_at,
                     updated_at = excluded.updated_at",
                &[
                    &tenant.kind,
                    &tenant.id,
                    &record.scope.as_bytes(),
                    &record.key.as_bytes(),
                    &encode(&record.value),
                    &record.created_at,
                    &record.updated_at,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn global_all(&self, keep: &mut dyn FnMut(GlobalEntry) -> bool) -> Result<(), StoreError> {
        let rows = self.wait(self.query(
            "SELECT entry FROM global_kv ORDER BY scope, key, version",
            &[],
        ))?;
        for row in &rows {
            if !keep(decode(row.get::<_, &[u8]>(0))?) {
                break;
            }
        }
        Ok(())
    }

    fn tenant_states(
        &self,
        keep: &dyn Fn(&Tenant) -> bool,
    ) -> Result<Vec<TenantStateEntry>, StoreError> {
        let rows = self.wait(self.query(
            "SELECT tenant_type, tenant_id, entry FROM tenant_states",
            &[],
        ))?;
        let mut out = Vec::new();
        for row in &rows {
            let tenant = Tenant::new(row.get::<_, String>(0), row.get::<_, String>(1));
            if keep(&tenant) {
                out.push(decode(row.get::<_, &[u8]>(2))?);
            }
        }
        Ok(out)
    }

    fn tenant_states_page(
        &self,
        keep: &dyn Fn(&Tenant) -> bool,
        after: Option<&Tenant>,
        max_bytes: usize,
    ) -> Result<TenantStatesPage, StoreError> {
        const CHUNK: i64 = 500;
        let mut page = Pager::new(max_bytes);
        let mut from = after.cloned();
        loop {
            let (first, kind, id) = match &from {
                Some(t) => (false, t.kind.clone(), t.id.clone()),
                None => (true, String::new(), String::new()),
            };
            let rows = self.wait(self.query(
                "SELECT tenant_type, tenant_id, entry FROM tenant_states \
                 WHERE $1 OR (tenant_type, tenant_id) > ($2, $3) \
                 ORDER BY tenant_type, tenant_id LIMIT $4",
                &[&first, &kind, &id, &CHUNK],
            ))?;
            for row in &rows {
                let tenant = Tenant::new(row.get::<_, String>(0), row.get::<_, String>(1));
                from = Some(tenant.clone());
                if keep(&tenant) && !page.take(row.get::<_, &[u8]>(2), tenant)? {
                    return Ok(page.finish());
                }
            }
            if (rows.len() as i64) < CHUNK {
                return Ok(page.finish());
            }
        }
    }

    fn tenant_state(&self, tenant: &Tenant) -> Result<Option<TenantState>, StoreError> {
        let rows = self.wait(self.query(
            "SELECT entry FROM tenant_states WHERE tenant_type = $1 AND tenant_id = $2",
            &[&tenant.kind, &tenant.id],
        ))?;
        rows.first()
            .map(|r| decode::<TenantStateEntry>(r.get::<_, &[u8]>(0)).map(|e| e.state))
            .transpose()
    }

    fn put_tenant_state<'a>(
        &'a self,
        tenant: &'a Tenant,
        state: &'a TenantState,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let entry = encode(&TenantStateEntry {
                tenant: tenant.clone(),
                state: state.clone(),
            });
            self.query(
                "INSERT INTO tenant_states VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_type, tenant_id) DO UPDATE SET entry = excluded.entry",
                &[&tenant.kind, &tenant.id, &entry],
            )
            .await?;
            Ok(())
        })
    }

    fn global_create(&self, entry: GlobalEntry) -> StoreFuture<'_, GlobalEntry> {
        Box::pin(async move {
            let owner = entry.owner.as_ref();
            let rows = self
                .query(
                    "INSERT INTO global_kv VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT DO NOTHING RETURNING 1",
                    &[
                        &entry.scope.as_bytes(),
                        &entry.key.as_bytes(),
                        &i64::from(entry.version),
                        &owner.map(|t| t.kind.as_str()),
                        &owner.map(|t| t.id.as_str()),
                        &encode(&entry),
                    ],
                )
                .await?;
            if rows.is_empty() {
                return Err(StoreError::Exists(format!(
                    "{}/{} version {}",
                    entry.scope, entry.key, entry.version
                )));
            }
            Ok(entry)
        })
    }

    fn global_get(
        &self,
        scope: &str,
        key: &str,
        version: u32,
    ) -> Result<Option<GlobalEntry>, StoreError> {
        let rows = self.wait(self.query(
            "SELECT entry FROM global_kv WHERE scope = $1 AND key = $2 AND version = $3",
            &[&scope.as_bytes(), &key.as_bytes(), &i64::from(version)],
        ))?;
        rows.first()
            .map(|r| decode(r.get::<_, &[u8]>(0)))
            .transpose()
    }

    fn global_delete<'a>(
        &'a self,
        scope: &'a str,
        key: &'a str,
        version: u32,
        owner: &'a Tenant,
    ) -> StoreFuture<'a, GlobalDelete> {
        Box::pin(async move {
            let (scope, key, version) = (scope.as_bytes(), key.as_bytes(), i64::from(version));
            // The owner check and the delete are one statement.
            let deleted = self
                .query(
                    "DELETE FROM global_kv WHERE scope = $1 AND key = $2 AND version = $3
                     AND owner_type = $4 AND owner_id = $5 RETURNING 1",
                    &[&scope, &key, &version, &owner.kind, &owner.id],
                )
                .await?;
            if !deleted.is_empty() {
                return Ok(GlobalDelete::Deleted);
            }
            let exists = self
                .query(
                    "SELECT 1 FROM global_kv WHERE scope = $1 AND key = $2 AND version = $3",
                    &[&scope, &key, &version],
                )
                .await?;
            Ok(if exists.is_empty() {
                GlobalDelete::Missing
            } else {
                GlobalDelete::NotOwner
            })
        })
    }

    fn global_scan(
        &self,
        scope: &str,
        keep: &mut dyn FnMut(GlobalEntry) -> bool,
    ) -> Result<(), StoreError> {
        let rows = self.wait(self.query(
            "SELECT entry FROM global_kv WHERE scope = $1 ORDER BY key, version",
            &[&scope.as_bytes()],
        ))?;
        for row in &rows {
            if !keep(decode(row.get::<_, &[u8]>(0))?) {
                break;
            }
        }
        Ok(())
    }

    fn catalogue_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = self.wait(self.query("SELECT key, bytes FROM catalogue ORDER BY key", &[]))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn catalogue_put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.query(
                "INSERT INTO catalogue VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET bytes = excluded.bytes",
                &[&key, &bytes],
            )
            .await?;
            Ok(())
        })
    }

    fn catalogue_delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let rows = self
                .query("DELETE FROM catalogue WHERE key = $1 RETURNING 1", &[&key])
                .await?;
            Ok(!rows.is_empty())
        })
    }

    fn catalogue_apply<'a>(
        &'a self,
        puts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            for (key, bytes) in &puts {
                tx.execute(
                    "INSERT INTO catalogue VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET bytes = excluded.bytes",
                    &[key, bytes],
                )
                .await?;
            }
            for key in &deletes {
                tx.execute("DELETE FROM catalogue WHERE key = $1", &[key])
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        let rows = self.wait(self.query("SELECT token FROM tokens ORDER BY id", &[]))?;
        rows.iter()
            .map(|r| decode::<TokenRecord>(r.get::<_, &[u8]>(0)).map(StoredToken::from))
            .collect()
    }

    fn put_token<'a>(&'a self, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.query(
                "INSERT INTO tokens VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET token = excluded.token",
                &[&token.info.id, &encode(&TokenRecord::from(token))],
            )
            .await?;
            Ok(())
        })
    }

    fn delete_token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.query("DELETE FROM tokens WHERE id = $1", &[&id])
                .await?;
            Ok(())
        })
    }

    fn vars(&self) -> Result<Vec<StoredVar>, StoreError> {
        let rows = self.wait(self.query("SELECT var FROM vars ORDER BY key", &[]))?;
        rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
    }

    fn put_var<'a>(&'a self, var: &'a StoredVar) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = StoredVar::key(&var.plugin, var.tenant.as_ref(), &var.name);
            let sql = "INSERT INTO vars VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET var = excluded.var";
            self.query(sql, &[&key.as_bytes(), &encode(var)]).await?;
            Ok(())
        })
    }

    fn delete_var<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let sql = "DELETE FROM vars WHERE key = $1 RETURNING 1";
            Ok(!self.query(sql, &[&key.as_bytes()]).await?.is_empty())
        })
    }

    fn timers(&self) -> &dyn super::timers::TimerStore {
        self
    }

    fn audit_append(&self, mut entry: AuditEntry) -> StoreFuture<'_, AuditEntry> {
        Box::pin(async move {
            let row = self.query("SELECT nextval('audit_seq')", &[]).await?;
            let seq: i64 = row[0].get(0);
            entry.seq = seq as u64;
            self.query(
                "INSERT INTO audit VALUES ($1, $2)",
                &[&seq, &encode(&AuditRecord::from(&entry))],
            )
            .await?;
            Ok(entry)
        })
    }

    fn audit_delete_through(&self, seq: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let seq = seq.min(i64::MAX as u64) as i64;
            self.query("DELETE FROM audit WHERE seq <= $1", &[&seq])
                .await?;
            Ok(())
        })
    }

    fn audit(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let after = after.map_or(-1, |a| a.min(i64::MAX as u64) as i64);
        let rows = self.wait(self.query(
            "SELECT entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &(limit.min(i64::MAX as usize) as i64)],
        ))?;
        rows.iter()
            .map(|r| decode::<AuditRecord>(r.get::<_, &[u8]>(0)).map(AuditEntry::from))
            .collect()
    }
}
