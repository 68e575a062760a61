//! A page of tenant states filled up to a byte budget, the same way on
//! every backend ([`super::Store::tenant_states_page`]).

use super::StoreError;
use super::keys::decode;
use crate::mesophyll::db::{TenantStateEntry, TenantStatesPage};
use crate::mesophyll::message::Tenant;

/// The page being filled.
pub(super) struct Pager {
    max_bytes: usize,
    bytes: usize,
    states: Vec<TenantStateEntry>,
    last: Option<Tenant>,
    full: bool,
}

impl Pager {
    /// An empty page of at most `max_bytes` of encoded states (but at
    /// least one state).
    pub(super) fn new(max_bytes: usize) -> Self {
        Pager {
            max_bytes,
            bytes: 0,
            states: Vec::new(),
            last: None,
            full: false,
        }
    }

    /// Adds `tenant`'s state, stored as `bytes`; `false` when the page is
    /// full and it was left for the next.
    ///
    /// Fails when `bytes` is not a state.
    pub(super) fn take(&mut self, bytes: &[u8], tenant: Tenant) -> Result<bool, StoreError> {
        if !self.states.is_empty() && self.bytes + bytes.len() > self.max_bytes {
            self.full = true;
            return Ok(false);
        }
        self.bytes += bytes.len();
        self.states.push(decode(bytes)?);
        self.last = Some(tenant);
        Ok(true)
    }

    /// The page, with where the next begins if it filled up.
    pub(super) fn finish(self) -> TenantStatesPage {
        TenantStatesPage {
            next: if self.full { self.last } else { None },
            states: self.states,
        }
    }
}
