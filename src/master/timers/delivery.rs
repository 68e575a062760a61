//! Firing what is due: the loop that refills the near future from the
//! store, sleeps until the earliest timer, and delivers each to the worker
//! that owns its tenant, at most `concurrency` at once.
//!
//! A delivery is a waited dispatch: it succeeded when every handler
//! answered without error (a tenant none of whose plugins handles the
//! event succeeds with nothing to do). Otherwise the timer moves to
//! `now + retry_base * 2^(attempt-1)` (at most [`MAX_RETRY_DELAY`]), or,
//! after its last attempt, is dropped.

use super::near::{NEAR_MAX, WINDOW_MS};
use super::{MAX_RETRY_DELAY, Timers, cron, now_ms};
use crate::master::leadership::LeaderGate;
use crate::master::shard;
use crate::master::store::blocking;
use crate::master::store::timers::StoredTimer;
use crate::mesophyll::answers;
use crate::mesophyll::message::{Event, PluginOutcome, ServerMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Time a worker's answer may take beyond the handlers' deadline.
const ANSWER_SLACK: Duration = Duration::from_secs(1);

/// How often the loop looks again while the lease is not good (a leader
/// about to stand down: its duties are let go within moments).
const NOT_LEADING_POLL: Duration = Duration::from_millis(50);

/// How long the loop waits after a failed refill (the store is down).
const REFILL_RETRY: Duration = Duration::from_secs(1);

impl Timers {
    /// Starts firing: the loop runs until the returned task is aborted,
    /// and fires only while `leadership` says this master leads (a leader
    /// that wakes past its lease fires nothing before it stands down).
    pub fn start(self: &Arc<Self>, leadership: LeaderGate) -> tokio::task::JoinHandle<()> {
        let timers = Arc::clone(self);
        tokio::spawn(async move { timers.run(leadership).await })
    }

    async fn run(self: Arc<Self>, leadership: LeaderGate) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        loop {
            if !leadership.leads() {
                tokio::time::sleep(NOT_LEADING_POLL).await;
                continue;
            }
            let mut wait = Duration::from_millis(WINDOW_MS as u64 / 4);
            if let Err(e) = self.refill().await {
                tracing::warn!("timers: cannot read the store: {e}");
                wait = REFILL_RETRY;
            }
            let now = now_ms();
            let due = self.near().take_due(now, permits.available_permits());
            for t in due {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    break;
                };
                self.metrics.started_late(now - t.due_at);
                let timers = Arc::clone(&self);
                tokio::spawn(async move { timers.deliver(t, permit).await });
            }
            let next = {
                let near = self.near();
                let (held, in_flight) = near.sizes();
                self.metrics.sizes(held, in_flight);
                near.next_due()
            };
            if let Some(next) = next {
                // A timer due while every permit is taken waits for a
                // delivery to end, which wakes the loop.
                if permits.available_permits() > 0 {
                    wait = wait.min(Duration::from_millis((next - now).max(0) as u64));
                }
            }
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Reads the next stretch of the near future, if one is wanted.
    async fn refill(&self) -> Result<(), crate::master::store::StoreError> {
        let _loading = self.loading.lock().await;
        let now = now_ms();
        let after = {
            let near = self.near();
            if !near.wants_refill(now) {
                return Ok(());
            }
            near.loaded_through()
        };
        let until = now + WINDOW_MS;
        let limit = NEAR_MAX / 2;
        let read = blocking(&self.store, move |s| {
            s.timers().timers_due(after, until, limit)
        })
        .await?;
        let full = read.len() >= limit;
        self.near().refilled(read, until, full);
        Ok(())
    }

    async fn deliver(self: Arc<Self>, t: StoredTimer, _permit: OwnedSemaphorePermit) {
        let attempt = t.attempt + 1;
        let failure = self.dispatch(&t, attempt).await.err();
        let ended = match failure {
            None => {
                self.metrics.delivered("delivered");
                self.finish(&t).await
            }
            Some(code) if attempt >= self.config.max_attempts => {
                self.metrics.delivered("dropped");
                tracing::warn!(
                    tenant = %t.tenant, timer = t.id, event = %t.event, attempt, %code,
                    "timer dropped after its last attempt"
                );
                self.finish(&t).await
            }
            Some(code) => {
                self.metrics.delivered("retried");
                tracing::info!(tenant = %t.tenant, timer = t.id, attempt, %code, "timer delivery failed; retrying");
                self.retry(&t, attempt).await
            }
        };
        self.near().landed(t.id);
        if let Err(e) = ended {
            // It stays in the store as it was, and fires again after a
            // restart.
            tracing::warn!(tenant = %t.tenant, timer = t.id, "timers: cannot update the store: {e}");
        }
        self.wake.notify_one();
    }

    /// One waited dispatch of `t`; `Err` holds the failure's code.
    async fn dispatch(&self, t: &StoredTimer, attempt: u32) -> Result<(), String> {
        let worker = shard::worker_for(&t.tenant, self.workers);
        let event = Event {
            name: t.event.clone(),
            data: t.data.clone(),
            timer: Some(t.info(attempt)),
            ..Default::default()
        };
        let deadline_ms = self.config.deadline.as_millis() as u64;
        let (_, answer) = self
            .hub
            .request_with_id(worker, self.config.deadline + ANSWER_SLACK, |req_id| {
                ServerMessage::DispatchEvent {
                    req_id: Some(req_id),
                    tenant: t.tenant.clone(),
                    event,
                    deadline_ms,
                }
            })
            .await;
        let value = answer.map_err(|e| {
            crate::master::api::error::ApiError::from(e)
                .code()
                .to_owned()
        })?;
        let outcomes: Vec<PluginOutcome> = answers::decode_outcomes(&value)
            .map_or_else(|| value.decode(), Ok)
            .map_err(|_| "bad_worker_answer".to_owned())?;
        match outcomes.iter().find_map(|o| o.result.as_ref().err()) {
            Some(e) => Err(e.kind.as_str().to_owned()),
            None => Ok(()),
        }
    }

    /// The delivery of `t` ended: it leaves the store, and a schedule's
    /// next run takes its place.
    async fn finish(&self, t: &StoredTimer) -> Result<(), crate::master::store::StoreError> {
        let Some(name) = &t.schedule else {
            return self.store.timers().timer_done(t.id).await;
        };
        let now = now_ms();
        let next = move |spec: &crate::mesophyll::timers::ScheduleSpec| cron::next_run(spec, now);
        let run = self
            .store
            .timers()
            .schedule_advance(&t.tenant, name, t.id, &next)
            .await?;
        if let Some(run) = run {
            self.notice(run).await;
        }
        Ok(())
    }

    async fn retry(
        &self,
        t: &StoredTimer,
        attempt: u32,
    ) -> Result<(), crate::master::store::StoreError> {
        let delay = backoff(self.config.retry_base, attempt);
        let due_at = now_ms() + delay.as_millis() as i64;
        let moved = self
            .store
            .timers()
            .timer_retry(t.id, due_at, attempt)
            .await?;
        if let Some(moved) = moved {
            self.near().landed(t.id);
            self.notice(moved).await;
        }
        Ok(())
    }
}

/// The wait after failed attempt number `attempt` (1 for the first).
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_the_base_up_to_five_minutes() {
        let base = Duration::from_millis(100);
        let waits: Vec<u128> = (1..=4).map(|a| backoff(base, a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800]);
        assert_eq!(backoff(base, 40), MAX_RETRY_DELAY);
    }
}
