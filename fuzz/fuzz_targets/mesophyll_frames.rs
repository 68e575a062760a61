//! Mesophyll frames both ways: whatever bytes arrive on the hub or the
//! uplink decode to a message or an error, never a panic; what decodes
//! encodes again and decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::mesophyll::codec;
use meshplay::mesophyll::message::{ClientMessage, ServerMessage};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(msg) = codec::decode::<ServerMessage>(bytes)
        && let Ok(again) = codec::encode(&msg)
    {
        assert_eq!(codec::decode::<ServerMessage>(&again).unwrap(), msg);
    }
    if let Ok(msg) = codec::decode::<ClientMessage>(bytes)
        && let Ok(again) = codec::encode(&msg)
    {
        assert_eq!(codec::decode::<ClientMessage>(&again).unwrap(), msg);
    }
});
