//! Leadership among masters that share one database: a lease in the
//! `leadership` row, and the fence that keeps a master that lost it from
//! writing.
//!
//! The lease is one row: an epoch, who holds it, where that master
//! listens, and when it expires, by the database's clock (so the masters'
//! own clocks never have to agree). A master takes it when it has expired,
//! which moves the epoch on; the holder renews it well inside its time.
//!
//! The fence is in the database, not in the masters: every table a master
//! writes has a statement trigger (schema step 4) that refuses a write from
//! a session whose `meshplay.epoch` is not the row's epoch, with SQLSTATE
//! `MP001` ([`StoreError::Fenced`]). A master in a leadership set
//! ([`PostgresStore::fence`]) makes every connection of its pool say its
//! epoch (0 while it stands by: no epoch is 0, so a standby writes
//! nothing); a master that was paused past its lease and wakes finds each
//! of its writes refused, whatever it believes. A master that takes no
//! part in leadership says nothing and is not fenced.

use super::PostgresStore;
use crate::master::store::StoreError;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// An epoch no lease has: what a standby's connections say.
pub const STANDBY_EPOCH: i64 = 0;

/// Who leads, as the row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The lease's epoch (0: never taken).
    pub epoch: i64,
    /// The holder's id.
    pub holder: String,
    /// Where the holder's REST API listens.
    pub api_addr: String,
    /// Where its hub listens.
    pub mesophyll_addr: String,
    /// Whether the lease is still running by the database's clock.
    pub live: bool,
}

/// A master seen competing for the lease, as the `masters` table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenMaster {
    /// Its id.
    pub id: String,
    /// Where its REST API listens.
    pub api_addr: String,
    /// Where its hub listens.
    pub mesophyll_addr: String,
    /// How long ago it last asked for or renewed the lease, in
    /// milliseconds, by the database's clock.
    pub seen_ms_ago: i64,
}

/// A master that competes for the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its id, unique among the masters (a fresh one each start).
    pub id: String,
    /// Where its REST API listens.
    pub api_addr: String,
    /// Where its hub listens.
    pub mesophyll_addr: String,
}

impl PostgresStore {
    /// Takes the lease for `ttl` if it has expired (or was never taken),
    /// moving the epoch on; answers the new epoch, or `None` while another
    /// master holds it.
    ///
    /// Fails when the database cannot be reached.
    pub async fn try_lead(&self, me: &Candidate, ttl: Duration) -> Result<Option<i64>, StoreError> {
        let ms = ttl.as_millis() as i64;
        let rows = self
            .query(
                "UPDATE leadership
                 SET epoch = epoch + 1, holder = $1, api_addr = $2, mesophyll_addr = $3,
                     expires_at = now() + make_interval(secs => $4::bigint / 1000.0)
                 WHERE id = 1 AND expires_at < now()
                 RETURNING epoch",
                &[&me.id, &me.api_addr, &me.mesophyll_addr, &ms],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Extends the lease of `epoch`, held by `me`, to `ttl` from now;
    /// false when it is not (or no longer) theirs.
    ///
    /// Fails when the database cannot be reached: the caller must then
    /// count its lease as running out.
    pub async fn renew(
        &self,
        me: &Candidate,
        epoch: i64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ms = ttl.as_millis() as i64;
        let rows = self
            .query(
                "UPDATE leadership
                 SET expires_at = now() + make_interval(secs => $3::bigint / 1000.0)
                 WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at >= now()
                 RETURNING 1",
                &[&me.id, &epoch, &ms],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Gives the lease of `epoch` up at once (a clean shutdown), so a
    /// standby need not wait for it to expire.
    pub async fn resign(&self, me: &Candidate, epoch: i64) -> Result<(), StoreError> {
        self.query(
            "UPDATE leadership SET expires_at = now() - interval '1 second'
             WHERE id = 1 AND holder = $1 AND epoch = $2",
            &[&me.id, &epoch],
        )
        .await?;
        Ok(())
    }

    /// Says that `me` is alive and where it listens (its row in `masters`,
    /// which is not fenced: a standby says it too).
    pub async fn announce(&self, me: &Candidate) -> Result<(), StoreError> {
        self.query(
            "INSERT INTO masters VALUES ($1, $2, $3, now())
             ON CONFLICT (id) DO UPDATE SET api_addr = excluded.api_addr,
                 mesophyll_addr = excluded.mesophyll_addr, seen_at = now()",
            &[&me.id, &me.api_addr, &me.mesophyll_addr],
        )
        .await?;
        Ok(())
    }

    /// The masters seen within `within`, the most recently seen first;
    /// older rows are deleted on the way (a master that stopped).
    pub async fn masters(&self, within: Duration) -> Result<Vec<SeenMaster>, StoreError> {
        let ms = within.as_millis() as i64;
        self.query(
            "DELETE FROM masters WHERE seen_at < now() - make_interval(secs => $1::bigint / 1000.0) * 10",
            &[&ms],
        )
        .await?;
        let rows = self
            .query(
                "SELECT id, api_addr, mesophyll_addr,
                        (extract(epoch FROM now() - seen_at) * 1000)::bigint
                 FROM masters
                 WHERE seen_at >= now() - make_interval(secs => $1::bigint / 1000.0)
                 ORDER BY seen_at DESC",
                &[&ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SeenMaster {
                id: r.get(0),
                api_addr: r.get(1),
                mesophyll_addr: r.get(2),
                seen_ms_ago: r.get(3),
            })
            .collect())
    }

    /// Who leads now.
    pub async fn leader(&self) -> Result<Leader, StoreError> {
        let rows = self
            .query(
                "SELECT epoch, holder, api_addr, mesophyll_addr, expires_at >= now()
                 FROM leadership WHERE id = 1",
                &[],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("the leadership row is missing".into()))?;
        Ok(Leader {
            epoch: row.get(0),
            holder: row.get(1),
            api_addr: row.get(2),
            mesophyll_addr: row.get(3),
            live: row.get(4),
        })
    }

    /// From now on every connection of the pool writes for `epoch`
    /// ([`STANDBY_EPOCH`] while standing by): idle connections are closed,
    /// new ones say it as they open, and one that was out is closed when
    /// it comes back. A write already running on an old connection
    /// finishes under the epoch it started with (and the database refuses
    /// it if that epoch no longer leads).
    pub fn fence(&self, epoch: i64) {
        *self.fenced_at.lock().unwrap() = std::time::Instant::now();
        self.epoch.store(epoch, Ordering::SeqCst);
        self.pool.retain(|_, _| false);
    }

    /// The epoch this store's connections write for: `None` when it takes
    /// no part in leadership.
    pub fn epoch(&self) -> Option<i64> {
        Some(self.epoch.load(Ordering::SeqCst)).filter(|e| *e != super::connection::UNFENCED)
    }
}
