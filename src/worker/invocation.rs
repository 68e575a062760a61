//! The call a tenant's VM is running now: which plugin it runs for (none
//! for a RunScript), and what it has used of its per-call limits.
//!
//! A VM runs one call at a time ([`crate::worker::tenants`] queues the
//! rest), and every host function of the VM shares one `Invocation`: the
//! VM begins it before each handler or script, and host functions ask it
//! whose manifest grants what (`http.fetch` its `allowed_hosts`) and count
//! against it. A plugin's code cannot name another plugin: the VM, not
//! the script, says which plugin is running.

use crate::catalogue::plugin::Plugin;
use crate::mesophyll::message::{Event, Tenant};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The running call of one VM.
#[derive(Default)]
pub struct Invocation {
    plugin: Mutex<Option<Arc<Plugin>>>,
    hops: AtomicU32,
    fetches: AtomicU32,
    fetching: Arc<AtomicU32>,
    emitted: Mutex<Vec<(Tenant, Event)>>,
}

/// What a call may not go past: fetches made, fetches in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// This call made its last allowed fetch already.
    #[error("this call made its {0} fetches already (the fleet's limit per call)")]
    Calls(u32),
    /// The tenant has this many fetches in flight already.
    #[error("this tenant has {0} fetches in flight already (the fleet's limit per tenant)")]
    InFlight(u32),
}

impl Invocation {
    /// A VM's invocation, before its first call.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A new call begins, for `plugin` (`None`: a script), handling an
    /// event that `hops` handlers emitted in a row before. Whatever the
    /// last call emitted and nobody took is dropped.
    pub fn begin(&self, plugin: Option<&Arc<Plugin>>, hops: u32) {
        *self.plugin.lock().unwrap() = plugin.cloned();
        self.hops.store(hops, Ordering::Relaxed);
        self.fetches.store(0, Ordering::Relaxed);
        self.emitted.lock().unwrap().clear();
    }

    /// How many handlers emitted the event this call handles, in a row.
    pub fn hops(&self) -> u32 {
        self.hops.load(Ordering::Relaxed)
    }

    /// Queues `event` for `to`, to be sent once the call succeeds; `limit`
    /// events a call at most (`Err` past it, with the limit).
    pub fn emit(&self, to: Tenant, event: Event, limit: usize) -> Result<(), usize> {
        let mut emitted = self.emitted.lock().unwrap();
        if emitted.len() >= limit {
            return Err(limit);
        }
        emitted.push((to, event));
        Ok(())
    }

    /// The data bytes queued so far.
    pub fn emitted_bytes(&self) -> usize {
        self.emitted
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.data.as_bytes().len())
            .sum()
    }

    /// What the call emitted (the call succeeded: now it may go).
    pub fn take_emitted(&self) -> Vec<(Tenant, Event)> {
        std::mem::take(&mut *self.emitted.lock().unwrap())
    }

    /// The plugin the call runs for.
    pub fn plugin(&self) -> Option<Arc<Plugin>> {
        self.plugin.lock().unwrap().clone()
    }

    /// Counts one fetch of this call and holds one of the tenant's fetch
    /// slots until the returned guard drops.
    pub fn start_fetch(&self, per_call: u32, per_tenant: u32) -> Result<InFlight, Exhausted> {
        let made = self.fetches.fetch_add(1, Ordering::Relaxed);
        if made >= per_call {
            return Err(Exhausted::Calls(per_call));
        }
        let now = self.fetching.fetch_add(1, Ordering::AcqRel);
        let slot = InFlight(Arc::clone(&self.fetching));
        if now >= per_tenant {
            return Err(Exhausted::InFlight(per_tenant));
        }
        Ok(slot)
    }
}

/// One of a tenant's fetch slots, given back on drop.
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_counts_its_fetches_and_a_tenant_its_slots() {
        let call = Invocation::new();
        call.begin(None, 0);
        let a = call.start_fetch(3, 2).unwrap();
        let b = call.start_fetch(3, 2).unwrap();
        assert!(matches!(
            call.start_fetch(3, 2),
            Err(Exhausted::InFlight(2))
        ));
        assert!(matches!(call.start_fetch(3, 2), Err(Exhausted::Calls(3))));
        call.begin(None, 0);
        assert!(matches!(
            call.start_fetch(3, 2),
            Err(Exhausted::InFlight(2))
        ));
        drop((a, b));
        call.begin(None, 0);
        assert!(call.start_fetch(3, 2).is_ok());
    }
}
