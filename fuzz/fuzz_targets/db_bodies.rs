//! The DB endpoints' MessagePack bodies, as a worker (or anyone on the
//! Mesophyll port) may send them, and the checks a decoded tenant state,
//! timer request or NATS publish then goes through: whatever the bytes,
//! the check answers (never panics), and a state it takes is within its
//! bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::catalogue::subject::check_subject;
use meshplay::mesophyll::db::NatsPublish;
use meshplay::mesophyll::db::{
    GlobalOp, KvOp, MAX_STATE_NAME_BYTES, MAX_STATE_NAMES, MAX_VALUE_BYTES, PublicGlobalOp,
    TenantStateEntry, check_state,
};
use meshplay::mesophyll::timers::{TimerOp, TimerRequest, check_name};

fuzz_target!(|bytes: &[u8]| {
    let _ = rmp_serde::from_slice::<KvOp>(bytes);
    let _ = rmp_serde::from_slice::<GlobalOp>(bytes);
    let _ = rmp_serde::from_slice::<PublicGlobalOp>(bytes);
    if let Ok(req) = rmp_serde::from_slice::<TimerRequest>(bytes) {
        match &req.op {
            TimerOp::Set { event, .. } => drop(check_name("an event's name", event)),
            TimerOp::Every(spec) => {
                drop(check_name("a schedule's name", &spec.name));
                drop(check_name("an event's name", &spec.event));
            }
            TimerOp::Unschedule { name } => drop(check_name("a schedule's name", name)),
            TimerOp::Cancel { .. } | TimerOp::List => {}
        }
    }
    if let Ok(publish) = rmp_serde::from_slice::<NatsPublish>(bytes) {
        let _ = check_subject(&publish.subject);
    }
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
