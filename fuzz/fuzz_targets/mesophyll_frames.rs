//! Mesophyll frames both ways: whatever bytes arrive on the hub or the
//! uplink decode to a message or an error, never a panic; what decodes
//! encodes again and decodes to the same; the hub's fast path for answers
//! and the master's for result lists agree with the full decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshplay::mesophyll::message::{ClientMessage, Packed, PluginOutcome, ServerMessage};
use meshplay::mesophyll::{answers, codec};

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
    // The hub's fast path for answers takes only what the full decoder
    // takes, and reads the same value from it.
    if let Some((req_id, value)) = answers::decode_answer(bytes) {
        match codec::decode::<ClientMessage>(bytes) {
            Ok(ClientMessage::DispatchResponse {
                req_id: id,
                result: Ok(v),
            }) => {
                assert_eq!(id, req_id);
                assert_eq!(v.to_value(), value.to_value());
            }
            other => panic!("the fast path took a frame the decoder reads as {other:?}"),
        }
        // The answer's value as the master reads it, a result list: the
        // fast path for those agrees with the decoder too.
        if let Some(outcomes) = answers::decode_outcomes(&value) {
            let decoded: Vec<PluginOutcome> = value.decode().expect("the decoder takes it too");
            assert_eq!(decoded.len(), outcomes.len());
            for (a, b) in decoded.iter().zip(&outcomes) {
                assert_eq!(a.plugin, b.plugin);
                let value = |o: &PluginOutcome| o.result.as_ref().ok().map(Packed::to_value);
                assert_eq!(value(a), value(b));
            }
        }
    }
});
