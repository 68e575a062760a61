//! MessagePack encoding of Mesophyll frames.
//!
//! One frame is one MessagePack value. Structs are written as maps (field
//! names included) so that peers of different versions can add fields; the
//! cost is a few bytes per frame, which the benchmarks show to be noise next
//! to the WebSocket and the Luau call.
//!
//! Both directions enforce [`MAX_FRAME_BYTES`]: a frame over it is refused
//! before any decoding is attempted, so a hostile or buggy peer cannot make
//! the other side allocate without bound.

use serde::{Serialize, de::DeserializeOwned};

/// The largest frame either side accepts or sends: 4 MiB. Values in the KV
/// store are capped far below this (256 KiB), so only a runaway event payload
/// can hit it.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Room a frame's buffer starts with: most frames fit, and growing a
/// `Vec` from nothing copied it five times over (the profile showed the
/// reallocations before the encoding itself).
pub const FRAME_START: usize = 512;

/// How much a WebSocket reads from its socket at once, on every
/// connection that carries frames (hub, uplink, the binary client API and
/// its client). tungstenite zero-fills that much of its buffer before each
/// read, even one that finds nothing; at its default of 128 KiB that was a
/// tenth of the master's time under the binary benchmark. A batch of small
/// frames fits in 16 KiB; a larger frame takes more reads.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {size} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a MessagePack encoding of the expected message.
    #[error("undecodable frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The value could not be written as MessagePack.
    #[error("unencodable message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encodes `msg` as one frame.
///
/// Fails with [`CodecError::TooLarge`] when the encoding exceeds
/// [`MAX_FRAME_BYTES`], so that the sender learns of it instead of the peer
/// dropping the frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::with_capacity(FRAME_START);
    msg.serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map())?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(bytes)
}

/// Decodes one frame.
///
/// Fails with [`CodecError::TooLarge`] for an oversized frame and
/// [`CodecError::Decode`] for anything that is not the expected message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesophyll::message::*;
    use serde_json::json;

    fn every_server_message() -> Vec<ServerMessage> {
        let tenant = Tenant::new("user", "42");
        let event = Event {
            name: "echo".into(),
            data: json!({"x": 1, "nested": [1.5, "two", null, {"ok": true}]}).into(),
            ..Default::default()
        };
        vec![
            ServerMessage::Hello {
                protocol: PROTOCOL_VERSION,
                worker_id: 3,
                heartbeat_interval_ms: 1000,
                heartbeat_timeout_ms: 5000,
                egress: Some(EgressPolicy {
                    open_networks: vec!["10.1.0.0/16".into()],
                    master_addrs: vec!["127.0.0.1:9081".parse().unwrap()],
                    ..EgressPolicy::default()
                }),
                max_event_hops: Some(8),
            },
            ServerMessage::DispatchEvent {
                req_id: Some(u64::MAX),
                tenant: tenant.clone(),
                event: event.clone(),
                deadline_ms: 250,
            },
            ServerMessage::DispatchEvent {
                req_id: None,
                tenant: tenant.clone(),
                event: event.clone(),
                deadline_ms: 250,
            },
            ServerMessage::RunScript {
                req_id: 7,
                tenant: tenant.clone(),
                name: "probe".into(),
                code: "return 1 + 1".into(),
                event,
                deadline_ms: 1000,
            },
            ServerMessage::DropTenant {
                req_id: 8,
                tenant: tenant.clone(),
            },
            ServerMessage::TenantStateChanged {
                req_id: Some(9),
                tenant: tenant.clone(),
                state: Some(TenantState {
                    events: Some(vec!["echo".into()]),
                    plugins: None,
                    data: json!({"lang": "en"}),
                }),
            },
            ServerMessage::TenantStateChanged {
                req_id: None,
                tenant,
                state: None,
            },
            ServerMessage::CatalogueChanged { revision: 12 },
            ServerMessage::ListTenants {
                req_id: 10,
                limit: 100,
            },
            ServerMessage::Shutdown { grace_ms: 3000 },
        ]
    }

    fn every_client_message() -> Vec<ClientMessage> {
        vec![
            ClientMessage::DispatchResponse {
                req_id: 1,
                result: Ok(json!([{"plugin": "echo", "result": {"Ok": {"a": "b"}}}]).into()),
            },
            ClientMessage::DispatchResponse {
                req_id: 2,
                result: Err(RemoteError::new(ErrorKind::Timeout, "ran past 100 ms")),
            },
            ClientMessage::Heartbeat {
                in_flight: 3,
                vms: 10,
                rss_bytes: 1 << 30,
                bad_frames: 0,
                filters: vec![FilterCalls {
                    filter: "redact".into(),
                    outcome: "continue".into(),
                    calls: 7,
                }],
                filter_metrics: vec![FilterMetric {
                    filter: "proxy-deny".into(),
                    name: "denied".into(),
                    kind: "counter".into(),
                    value: 2,
                    count: 0,
                }],
                egress: vec![EgressCalls {
                    plugin: "relay".into(),
                    outcome: "egress_denied".into(),
                    calls: 1,
                }],
                hop_limited: 3,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for msg in every_server_message() {
            let back: ServerMessage = decode(&encode(&msg).unwrap()).unwrap();
            assert_eq!(back, msg);
        }
        for msg in every_client_message() {
            let back: ClientMessage = decode(&encode(&msg).unwrap()).unwrap();
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn structs_are_maps_so_fields_can_be_added() {
        // A newer peer's Heartbeat with a field this build does not know.
        #[derive(Serialize)]
        struct NewerHeartbeat {
            in_flight: u64,
            vms: u64,
            rss_bytes: u64,
            bad_frames: u64,
            gpu_seconds: f64,
        }
        #[derive(Serialize)]
        enum Newer {
            Heartbeat(NewerHeartbeat),
        }
        let bytes = encode(&Newer::Heartbeat(NewerHeartbeat {
            in_flight: 1,
            vms: 2,
            rss_bytes: 3,
            bad_frames: 4,
            gpu_seconds: 0.5,
        }))
        .unwrap();
        let msg: ClientMessage = decode(&bytes).unwrap();
        assert_eq!(
            msg,
            ClientMessage::Heartbeat {
                in_flight: 1,
                vms: 2,
                rss_bytes: 3,
                bad_frames: 4,
                filters: vec![],
                filter_metrics: vec![],
                egress: vec![],
                hop_limited: 0,
            }
        );
    }

    #[test]
    fn unknown_error_kinds_decode_as_unknown() {
        let bytes = rmp_serde::to_vec_named(&json!({"kind": "quota", "message": "m"})).unwrap();
        let err: RemoteError = decode(&bytes).unwrap();
        assert_eq!(err.kind, ErrorKind::Unknown);
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        assert!(matches!(
            decode::<ServerMessage>(b"\xc1\xff garbage"),
            Err(CodecError::Decode(_))
        ));
        let good = encode(&every_server_message()[1]).unwrap();
        for cut in 0..good.len() {
            assert!(
                decode::<ServerMessage>(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let big = ServerMessage::RunScript {
            req_id: 1,
            tenant: Tenant::new("t", "1"),
            name: "big".into(),
            code: "x".repeat(MAX_FRAME_BYTES + 1),
            event: Event::default(),
            deadline_ms: 1,
        };
        assert!(matches!(encode(&big), Err(CodecError::TooLarge { .. })));
        let raw = vec![0u8; MAX_FRAME_BYTES + 1];
        assert!(matches!(
            decode::<ServerMessage>(&raw),
            Err(CodecError::TooLarge { .. })
        ));
    }
}

#[cfg(test)]
mod properties {
    //! Round trips of arbitrary messages, and arbitrary bytes decoded
    //! without a panic (the fuzz targets in `fuzz/` go further).

    use super::*;
    use crate::mesophyll::answers::*;
    use crate::mesophyll::message::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn tenant() -> impl Strategy<Value = Tenant> {
        (".{0,16}", ".{0,16}").prop_map(|(k, i)| Tenant::new(k, i))
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            ".{0,16}",
            json(),
            prop::collection::btree_map("[a-z-]{1,8}", ".{0,8}", 0..3),
        )
            .prop_map(|(name, data, headers)| Event {
                name,
                data: data.into(),
                headers,
                hops: 0,
                timer: None,
                http: None,
            })
    }

    fn kind() -> impl Strategy<Value = ErrorKind> {
        prop_oneof![
            Just(ErrorKind::Timeout),
            Just(ErrorKind::Memory),
            Just(ErrorKind::Runtime),
            Just(ErrorKind::Overloaded),
            Just(ErrorKind::Unavailable),
            Just(ErrorKind::TooLarge),
        ]
    }

    fn server_message() -> impl Strategy<Value = ServerMessage> {
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(p, w, i, t)| {
                ServerMessage::Hello {
                    protocol: p,
                    worker_id: w,
                    heartbeat_interval_ms: i,
                    heartbeat_timeout_ms: t,
                    egress: None,
                    max_event_hops: None,
                }
            }),
            (any::<Option<u64>>(), tenant(), event(), any::<u64>()).prop_map(|(r, t, e, d)| {
                ServerMessage::DispatchEvent {
                    req_id: r,
                    tenant: t,
                    event: e,
                    deadline_ms: d,
                }
            }),
            (
                any::<u64>(),
                tenant(),
                ".{0,8}",
                ".{0,64}",
                event(),
                any::<u64>()
            )
                .prop_map(|(r, t, name, code, e, d)| ServerMessage::RunScript {
                    req_id: r,
                    tenant: t,
                    name,
                    code,
                    event: e,
                    deadline_ms: d,
                }),
            (any::<u64>(), tenant()).prop_map(|(r, t)| ServerMessage::DropTenant {
                req_id: r,
                tenant: t
            }),
            (any::<Option<u64>>(), tenant(), proptest::option::of(json())).prop_map(
                |(r, t, data)| ServerMessage::TenantStateChanged {
                    req_id: r,
                    tenant: t,
                    state: data.map(|data| TenantState {
                        data,
                        ..TenantState::default()
                    }),
                }
            ),
            any::<u64>().prop_map(|r| ServerMessage::CatalogueChanged { revision: r }),
            (any::<u64>(), any::<u32>()).prop_map(|(r, l)| ServerMessage::ListTenants {
                req_id: r,
                limit: l
            }),
            any::<u64>().prop_map(|g| ServerMessage::Shutdown { grace_ms: g }),
        ]
    }

    fn client_message() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            (any::<u64>(), json()).prop_map(|(r, v)| ClientMessage::DispatchResponse {
                req_id: r,
                result: Ok(v.into()),
            }),
            (any::<u64>(), kind(), ".{0,32}").prop_map(|(r, k, m)| {
                ClientMessage::DispatchResponse {
                    req_id: r,
                    result: Err(RemoteError::new(k, m)),
                }
            }),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(i, v, r, b)| {
                ClientMessage::Heartbeat {
                    in_flight: i,
                    vms: v,
                    rss_bytes: r,
                    bad_frames: b,
                    filters: vec![],
                    filter_metrics: vec![],
                    egress: vec![],
                    hop_limited: 0,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn server_messages_round_trip(msg in server_message()) {
            let bytes = encode(&msg).unwrap();
            prop_assert_eq!(decode::<ServerMessage>(&bytes).unwrap(), msg);
        }

        #[test]
        fn client_messages_round_trip(msg in client_message()) {
            let bytes = encode(&msg).unwrap();
            prop_assert_eq!(decode::<ClientMessage>(&bytes).unwrap(), msg);
        }

        #[test]
        fn answers_encode_the_fast_way_as_the_slow_way(req_id in any::<u64>(), v in json()) {
            let value = Packed::from_value(&v);
            let slow = encode(&ClientMessage::DispatchResponse { req_id, result: Ok(value.clone()) }).unwrap();
            prop_assert_eq!(encode_answer(req_id, &value).unwrap(), slow);
        }

        #[test]
        fn answers_decode_the_fast_way_as_the_slow_way(req_id in any::<u64>(), v in json()) {
            let value = Packed::from_value(&v);
            let frame = encode(&ClientMessage::DispatchResponse { req_id, result: Ok(value.clone()) }).unwrap();
            prop_assert_eq!(decode_answer(&frame), Some((req_id, value)));
            // Cut anywhere, it is not an answer (the slow path then says why).
            for cut in 0..frame.len() {
                prop_assert_eq!(decode_answer(&frame[..cut]), None);
            }
        }

        #[test]
        fn other_frames_are_not_answers(msg in client_message()) {
            let frame = encode(&msg).unwrap();
            match (&msg, decode_answer(&frame)) {
                (ClientMessage::DispatchResponse { req_id, result: Ok(v) }, Some((id, got))) => {
                    prop_assert_eq!((req_id, v), (&id, &got));
                }
                (ClientMessage::DispatchResponse { result: Ok(_), .. }, None) => {
                    prop_assert!(false, "an answer was not recognised");
                }
                (_, got) => prop_assert_eq!(got, None),
            }
        }

        #[test]
        fn outcomes_encode_the_fast_way_as_the_slow_way(
            values in prop::collection::vec((".{0,8}", json(), kind(), any::<bool>()), 0..4)
        ) {
            let outcomes: Vec<PluginOutcome> = values
                .into_iter()
                .map(|(plugin, v, k, ok)| PluginOutcome {
                    result: if ok { Ok(v.into()) } else { Err(RemoteError::new(k, plugin.clone())) },
                    plugin,
                })
                .collect();
            let fast = encode_outcomes(&outcomes);
            prop_assert_eq!(&fast, &Packed::encode(&outcomes).unwrap());
            prop_assert_eq!(fast.decode::<Vec<PluginOutcome>>().unwrap(), outcomes);
        }

        #[test]
        fn any_bytes_decode_to_a_message_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<ServerMessage>(&bytes);
            let _ = decode::<ClientMessage>(&bytes);
        }
    }
}
