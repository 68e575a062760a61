//! Timers and schedules on PostgreSQL: the `timers` table, in columns so
//! that a retry moves a timer with one `UPDATE`, indexed by due time and
//! by tenant; `schedules`, one row per tenant and name. Writes that touch
//! both run in one transaction, each taking the schedule's row before its
//! timers' (another order would deadlock against a delete).

use super::super::keys::{decode, encode};
use super::super::timers::{NewTimer, NextRun, StoredSchedule, StoredTimer, TimerStore};
use super::super::{StoreError, StoreFuture};
use super::PostgresStore;
use crate::mesophyll::message::Tenant;
use crate::mesophyll::packed::Packed;
use crate::mesophyll::timers::ScheduleSpec;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

const COLUMNS: &str = "id, tenant_type, tenant_id, event, data, due_at, attempt, schedule";

fn timer(row: &Row) -> Result<StoredTimer, StoreError> {
    let id: i64 = row.get(0);
    let attempt: i32 = row.get(6);
    Ok(StoredTimer {
        id: id as u64,
        tenant: Tenant::new(row.get::<_, String>(1), row.get::<_, String>(2)),
        event: row.get(3),
        data: Packed::from_msgpack(row.get(4))
            .map_err(|e| StoreError::Corrupt(format!("a timer's data: {e}")))?,
        due_at: row.get(5),
        attempt: attempt as u32,
        schedule: row.get(7),
    })
}

fn insert_sql() -> String {
    format!("INSERT INTO timers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
}

async fn insert(
    client: &impl deadpool_postgres::GenericClient,
    t: &StoredTimer,
) -> Result<(), StoreError> {
    let (id, attempt) = (t.id as i64, t.attempt as i32);
    let values: [&(dyn ToSql + Sync); 8] = [
        &id,
        &t.tenant.kind,
        &t.tenant.id,
        &t.event,
        &t.data.as_bytes(),
        &t.due_at,
        &attempt,
        &t.schedule,
    ];
    client.execute(&insert_sql(), &values).await?;
    Ok(())
}

impl PostgresStore {
    async fn next_timer_id(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT nextval('timer_seq')", &[]).await?;
        Ok(rows[0].get::<_, i64>(0) as u64)
    }
}

impl TimerStore for PostgresStore {
    fn timer_add(&self, timer: NewTimer, cap: usize) -> StoreFuture<'_, StoredTimer> {
        Box::pin(async move {
            let stored = timer.stored(self.next_timer_id().await?);
            let (id, attempt) = (stored.id as i64, stored.attempt as i32);
            // The cap and the insert in one statement: two handlers of one
            // tenant setting timers at once cannot both pass it.
            let sql = format!(
                "INSERT INTO timers ({COLUMNS})
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8
                 WHERE (SELECT count(*) FROM (SELECT 1 FROM timers
                        WHERE tenant_type = $2 AND tenant_id = $3 LIMIT $9) AS pending) < $9
                 RETURNING 1"
            );
            let cap_i = cap.min(i64::MAX as usize) as i64;
            let rows = self
                .query(
                    &sql,
                    &[
                        &id,
                        &stored.tenant.kind,
                        &stored.tenant.id,
                        &stored.event,
                        &stored.data.as_bytes(),
                        &stored.due_at,
                        &attempt,
                        &stored.schedule,
                        &cap_i,
                    ],
                )
                .await?;
            if rows.is_empty() {
                return Err(StoreError::Limit {
                    code: "too_many_timers",
                    message: format!(
                        "{} has {cap} pending timers, its limit (serve --max-timers-per-tenant)",
                        stored.tenant
                    ),
                });
            }
            Ok(stored)
        })
    }

    fn timer_cancel<'a>(&'a self, tenant: &'a Tenant, id: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let sql = "DELETE FROM timers WHERE id = $1 AND tenant_type = $2 AND tenant_id = $3
                       AND schedule IS NULL RETURNING 1";
            let rows = self
                .query(sql, &[&(id as i64), &tenant.kind, &tenant.id])
                .await?;
            Ok(!rows.is_empty())
        })
    }

    fn timer_retry(
        &self,
        id: u64,
        due_at: i64,
        attempt: u32,
    ) -> StoreFuture<'_, Option<StoredTimer>> {
        Box::pin(async move {
            let sql = format!(
                "UPDATE timers SET due_at = $2, attempt = $3 WHERE id = $1 RETURNING {COLUMNS}"
            );
            let rows = self
                .query(&sql, &[&(id as i64), &due_at, &(attempt as i32)])
                .await?;
            rows.first().map(timer).transpose()
        })
    }

    fn timer_done(&self, id: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.query("DELETE FROM timers WHERE id = $1", &[&(id as i64)])
                .await?;
            Ok(())
        })
    }

    fn timers_due(
        &self,
        after: (i64, u64),
        until: i64,
        limit: usize,
    ) -> Result<Vec<StoredTimer>, StoreError> {
        self.wait(async {
            let sql = format!(
                "SELECT {COLUMNS} FROM timers WHERE (due_at, id) > ($1, $2) AND due_at <= $3
                 ORDER BY due_at, id LIMIT $4"
            );
            let after_id = after.1.min(i64::MAX as u64) as i64;
            let rows = self
                .query(&sql, &[&after.0, &after_id, &until, &(limit as i64)])
                .await?;
            rows.iter().map(timer).collect()
        })
    }

    fn timers_of(&self, tenant: &Tenant, limit: usize) -> Result<Vec<StoredTimer>, StoreError> {
        self.wait(async {
            let sql = format!(
                "SELECT {COLUMNS} FROM timers WHERE tenant_type = $1 AND tenant_id = $2
                 ORDER BY id LIMIT $3"
            );
            let rows = self
                .query(&sql, &[&tenant.kind, &tenant.id, &(limit as i64)])
                .await?;
            rows.iter().map(timer).collect()
        })
    }

    fn schedule_put<'a>(
        &'a self,
        tenant: &'a Tenant,
        spec: ScheduleSpec,
        first_due: i64,
        cap: usize,
    ) -> StoreFuture<'a, StoredTimer> {
        Box::pin(async move {
            let run =
                NewTimer::run_of(tenant, &spec, first_due).stored(self.next_timer_id().await?);
            let name = spec.name.clone();
            let schedule = StoredSchedule {
                tenant: tenant.clone(),
                spec,
                timer_id: run.id,
                next_due: first_due,
            };
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let key: [&(dyn ToSql + Sync); 3] = [&tenant.kind, &tenant.id, &name];
            let old = tx
                .query(
                    "SELECT schedule FROM schedules
                     WHERE tenant_type = $1 AND tenant_id = $2 AND name = $3 FOR UPDATE",
                    &key,
                )
                .await?;
            if let Some(row) = old.first() {
                let old: StoredSchedule = decode(row.get::<_, &[u8]>(0))?;
                tx.execute(
                    "DELETE FROM timers WHERE id = $1",
                    &[&(old.timer_id as i64)],
                )
                .await?;
            } else {
                let count: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM schedules WHERE tenant_type = $1 AND tenant_id = $2",
                        &key[..2],
                    )
                    .await?
                    .get(0);
                if count as usize >= cap {
                    return Err(StoreError::Limit {
                        code: "too_many_schedules",
                        message: format!("{tenant} has {cap} schedules, its limit"),
                    });
                }
            }
            tx.execute(
                "INSERT INTO schedules (tenant_type, tenant_id, name, schedule)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_type, tenant_id, name) DO UPDATE SET schedule = $4",
                &[&tenant.kind, &tenant.id, &name, &encode(&schedule)],
            )
            .await?;
            insert(&tx, &run).await?;
            tx.commit().await?;
            Ok(run)
        })
    }

    fn schedule_delete<'a>(&'a self, tenant: &'a Tenant, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let gone = tx
                .query(
                    "DELETE FROM schedules WHERE tenant_type = $1 AND tenant_id = $2 AND name = $3
                     RETURNING schedule",
                    &[&tenant.kind, &tenant.id, &name],
                )
                .await?;
            let Some(row) = gone.first() else {
                return Ok(false);
            };
            let old: StoredSchedule = decode(row.get::<_, &[u8]>(0))?;
            tx.execute(
                "DELETE FROM timers WHERE id = $1",
                &[&(old.timer_id as i64)],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn schedule_advance<'a>(
        &'a self,
        tenant: &'a Tenant,
        name: &'a str,
        done: u64,
        next: NextRun<'a>,
    ) -> StoreFuture<'a, Option<StoredTimer>> {
        Box::pin(async move {
            let id = self.next_timer_id().await?;
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // The schedule's row before its timer's, as every transaction
            // here takes them: two orders would deadlock with a delete.
            let rows = tx
                .query(
                    "SELECT schedule FROM schedules
                     WHERE tenant_type = $1 AND tenant_id = $2 AND name = $3 FOR UPDATE",
                    &[&tenant.kind, &tenant.id, &name],
                )
                .await?;
            tx.execute("DELETE FROM timers WHERE id = $1", &[&(done as i64)])
                .await?;
            let mut schedule: StoredSchedule = match rows.first() {
                Some(row) => decode(row.get::<_, &[u8]>(0))?,
                None => {
                    tx.commit().await?;
                    return Ok(None);
                }
            };
            if schedule.timer_id != done {
                tx.commit().await?;
                return Ok(None);
            }
            let Some(next_due) = next(&schedule.spec) else {
                tx.execute(
                    "DELETE FROM schedules WHERE tenant_type = $1 AND tenant_id = $2 AND name = $3",
                    &[&tenant.kind, &tenant.id, &name],
                )
                .await?;
                tx.commit().await?;
                return Ok(None);
            };
            let run = NewTimer::run_of(tenant, &schedule.spec, next_due).stored(id);
            schedule.timer_id = id;
            schedule.next_due = next_due;
            tx.execute(
                "UPDATE schedules SET schedule = $4
                 WHERE tenant_type = $1 AND tenant_id = $2 AND name = $3",
                &[&tenant.kind, &tenant.id, &name, &encode(&schedule)],
            )
            .await?;
            insert(&tx, &run).await?;
            tx.commit().await?;
            Ok(Some(run))
        })
    }

    fn schedules_all(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        self.wait(async {
            let rows = self.query("SELECT schedule FROM schedules", &[]).await?;
            rows.iter()
                .map(|row| decode(row.get::<_, &[u8]>(0)))
                .collect()
        })
    }

    fn schedules_of(&self, tenant: &Tenant) -> Result<Vec<StoredSchedule>, StoreError> {
        self.wait(async {
            let rows = self
                .query(
                    "SELECT schedule FROM schedules WHERE tenant_type = $1 AND tenant_id = $2
                     ORDER BY name",
                    &[&tenant.kind, &tenant.id],
                )
                .await?;
            rows.iter()
                .map(|row| decode(row.get::<_, &[u8]>(0)))
                .collect()
        })
    }
}
