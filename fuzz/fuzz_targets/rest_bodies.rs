//! The REST API's request bodies, in JSON and in MessagePack, and the
//! binary client API's request frames (MessagePack).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::mesophyll::message::TenantState;
use meshplay::rest::{DispatchRequest, PluginUpload, ScriptRequest, StreamRequest};

fn both<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
    let _ = serde_json::from_slice::<T>(bytes);
    let _ = rmp_serde::from_slice::<T>(bytes);
}

fuzz_target!(|bytes: &[u8]| {
    both::<DispatchRequest>(bytes);
    both::<ScriptRequest>(bytes);
    both::<TenantState>(bytes);
    both::<PluginUpload>(bytes);
    both::<serde_json::Value>(bytes);
    let _ = rmp_serde::from_slice::<StreamRequest>(bytes);
});
