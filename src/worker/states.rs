//! The tenant states a worker holds: which events and plugins each tenant
//! may run. They arrive whole (a reload, at start and on every reconnect)
//! and one by one (`TenantStateChanged`); a change that arrives while a
//! reload is under way may be newer than the reload's snapshot, so it is
//! applied again on top of it.

use crate::mesophyll::db::TenantStateEntry;
use crate::mesophyll::message::{Tenant, TenantState};
use dashmap::DashMap;

/// Changes of tenant state that arrived while a full reload was under way,
/// in arrival order: they are newer than the reload's snapshot may be, so
/// they are applied again on top of it.
#[derive(Default)]
struct Reloads {
    running: usize,
    changes: Vec<(Tenant, Option<TenantState>)>,
}

/// A full reload of the tenant states, begun with [`TenantStates::begin_reload`].
#[must_use = "finish it with Tenants::finish_reload"]
pub struct Reload(());

/// Every tenant state of this worker's shard.
#[derive(Default)]
pub struct TenantStates {
    states: DashMap<Tenant, TenantState>,
    reloads: std::sync::Mutex<Reloads>,
}

impl TenantStates {
    /// Sets (or, with `None`, clears) one tenant's state; the tenant's next
    /// event sees it.
    pub fn set(&self, tenant: Tenant, state: Option<TenantState>) {
        {
            let mut reloads = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
            if reloads.running > 0 {
                reloads.changes.push((tenant.clone(), state.clone()));
            }
        }
        self.apply(tenant, state);
    }

    fn apply(&self, tenant: Tenant, state: Option<TenantState>) {
        match state {
            Some(s) => {
                self.states.insert(tenant, s);
            }
            None => {
                self.states.remove(&tenant);
            }
        }
    }

    /// One tenant's state as this worker holds it.
    pub fn state(&self, tenant: &Tenant) -> Option<TenantState> {
        self.states.get(tenant).map(|s| s.clone())
    }

    /// Starts a full reload: call before asking the master for every state.
    pub fn begin_reload(&self) -> Reload {
        self.reloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running += 1;
        Reload(())
    }

    /// Ends a full reload with what the master answered (or, with `None`,
    /// gives it up): every state becomes `entries`, then the changes that
    /// arrived meanwhile are applied again, in order, on top.
    pub fn finish_reload(&self, reload: Reload, entries: impl Into<Option<Vec<TenantStateEntry>>>) {
        let Reload(()) = reload;
        let mut reloads = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entries) = entries.into() {
            self.replace(entries);
            for (tenant, state) in reloads.changes.clone() {
                self.apply(tenant, state);
            }
        }
        reloads.running -= 1;
        if reloads.running == 0 {
            reloads.changes.clear();
        }
    }

    /// Replaces every tenant state with `entries`.
    fn replace(&self, entries: Vec<TenantStateEntry>) {
        let fresh: std::collections::HashSet<Tenant> =
            entries.iter().map(|e| e.tenant.clone()).collect();
        self.states.retain(|t, _| fresh.contains(t));
        for e in entries {
            self.states.insert(e.tenant, e.state);
        }
    }
}
