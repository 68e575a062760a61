//! The DB endpoints' MessagePack bodies, as a worker (or anyone on the
//! Mesophyll port) may send them, and the checks a decoded tenant state
//! then goes through: whatever the bytes, the check answers (never
//! panics), and a state it takes is within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::mesophyll::db::{
    GlobalOp, KvOp, MAX_STATE_NAME_BYTES, MAX_STATE_NAMES, MAX_VALUE_BYTES, PublicGlobalOp,
    TenantStateEntry, check_state,
};

fuzz_target!(|bytes: &[u8]| {
    let _ = rmp_serde::from_slice::<KvOp>(bytes);
    let _ = rmp_serde::from_slice::<GlobalOp>(bytes);
    let _ = rmp_serde::from_slice::<PublicGlobalOp>(bytes);
    if let Ok(entry) = rmp_serde::from_slice::<TenantStateEntry>(bytes) {
        if check_state(&entry.state).is_ok() {
            let state = &entry.state;
            for names in [&state.events, &state.plugins].into_iter().flatten() {
                assert!(names.len() <= MAX_STATE_NAMES);
                assert!(names.iter().all(|n| n.len() <= MAX_STATE_NAME_BYTES));
            }
            let size = rmp_serde::to_vec_named(state).unwrap().len();
            assert!(size <= MAX_VALUE_BYTES);
        }
    }
});
