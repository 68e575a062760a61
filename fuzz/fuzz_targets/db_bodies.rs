//! The DB endpoints' MessagePack bodies, as a worker (or anyone on the
//! Mesophyll port) may send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::mesophyll::db::{GlobalOp, KvOp, PublicGlobalOp, TenantStateEntry};

fuzz_target!(|bytes: &[u8]| {
    let _ = rmp_serde::from_slice::<KvOp>(bytes);
    let _ = rmp_serde::from_slice::<GlobalOp>(bytes);
    let _ = rmp_serde::from_slice::<PublicGlobalOp>(bytes);
    let _ = rmp_serde::from_slice::<TenantStateEntry>(bytes);
});
