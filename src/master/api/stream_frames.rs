//! The binary client API's hot frames, read and written by hand so that
//! a payload's bytes are copied whole where serde would replay them token
//! by token: the request ([`decode_request`]) and the done answer
//! ([`encode_done`]). Each takes or writes exactly what serde does for the
//! frames it handles (the tests hold them to it); anything else goes
//! through serde.

use crate::mesophyll::answers::{read_str, read_value};
use crate::mesophyll::message::{Packed, Tenant};
use crate::rest::{Dispatched, StreamAnswer, StreamRequest};

/// A stream answer as serde writes it (field names, so that any
/// MessagePack library reads it).
pub(super) fn encode(answer: &StreamAnswer<Packed>) -> Vec<u8> {
    use serde::Serialize;
    let mut bytes = Vec::with_capacity(crate::mesophyll::codec::FRAME_START);
    answer
        .serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map())
        .expect("answers encode");
    bytes
}

/// `StreamAnswer { id, done: Some(done), .. }`, byte for byte as [`encode`]
/// writes it, with each plugin's value copied in whole where serde would
/// replay it token by token (which, with building the answer, was a tenth
/// of the master's time under the binary benchmark).
pub(super) fn encode_done(id: u64, done: &Dispatched<Packed>) -> Vec<u8> {
    use rmp::encode::{write_array_len, write_map_len, write_str, write_uint};
    let values: usize = done
        .results
        .iter()
        .map(|r| r.value.as_ref().map_or(0, |v| v.as_bytes().len()))
        .sum();
    let mut b = Vec::with_capacity(crate::mesophyll::codec::FRAME_START + values);
    // Writes to a Vec cannot fail. A struct is a map of its fields, less
    // those skipped when `None`.
    let _ = write_map_len(&mut b, 2);
    let _ = write_str(&mut b, "id");
    let _ = write_uint(&mut b, id);
    let _ = write_str(&mut b, "done");
    let _ = write_map_len(&mut b, 3 + u32::from(done.request_id.is_some()));
    let _ = write_str(&mut b, "tenant");
    let _ = write_map_len(&mut b, 2);
    let _ = write_str(&mut b, "type");
    let _ = write_str(&mut b, &done.tenant.kind);
    let _ = write_str(&mut b, "id");
    let _ = write_str(&mut b, &done.tenant.id);
    let _ = write_str(&mut b, "worker");
    let _ = write_uint(&mut b, u64::from(done.worker));
    let _ = write_str(&mut b, "results");
    let _ = write_array_len(&mut b, done.results.len() as u32);
    for r in &done.results {
        let fields = 1 + u32::from(r.value.is_some()) + u32::from(r.error.is_some());
        let _ = write_map_len(&mut b, fields);
        let _ = write_str(&mut b, "plugin");
        let _ = write_str(&mut b, &r.plugin);
        if let Some(v) = &r.value {
            let _ = write_str(&mut b, "value");
            b.extend_from_slice(v.as_bytes());
        }
        if let Some(e) = &r.error {
            let _ = write_str(&mut b, "error");
            let _ = write_map_len(&mut b, 2);
            let _ = write_str(&mut b, "code");
            let _ = write_str(&mut b, &e.code);
            let _ = write_str(&mut b, "message");
            let _ = write_str(&mut b, &e.message);
        }
    }
    if let Some(request_id) = &done.request_id {
        let _ = write_str(&mut b, "request_id");
        let _ = write_str(&mut b, request_id);
    }
    b
}

/// A request frame as clients write it: a map of `id`, `tenant` (`type`,
/// `id`), `name`, `data`, `wait` and `timeout_ms` in any order, each at
/// most once, the first three required, strings as str; `None` for any
/// other frame (an unknown field, a string sent as bin, a bad value), which
/// serde then reads or refuses.
pub(super) fn decode_request(frame: &[u8]) -> Option<StreamRequest<Packed>> {
    let mut rd = frame;
    let fields = rmp::decode::read_map_len(&mut rd).ok()?;
    let (mut id, mut tenant, mut name, mut data, mut wait, mut timeout_ms) =
        (None, None, None, None, None, None);
    for _ in 0..fields {
        match read_str(&mut rd)? {
            "id" if id.is_none() => id = Some(rmp::decode::read_int::<u64, _>(&mut rd).ok()?),
            "tenant" if tenant.is_none() => tenant = Some(read_tenant(&mut rd)?),
            "name" if name.is_none() => name = Some(read_str(&mut rd)?.to_owned()),
            "data" if data.is_none() => data = Some(read_value(&mut rd)?),
            "wait" if wait.is_none() => wait = Some(rmp::decode::read_bool(&mut rd).ok()?),
            "timeout_ms" if timeout_ms.is_none() => {
                timeout_ms = Some(if rd.first() == Some(&0xc0) {
                    rd = &rd[1..];
                    None
                } else {
                    Some(rmp::decode::read_int::<u64, _>(&mut rd).ok()?)
                });
            }
            _ => return None,
        }
    }
    if !rd.is_empty() {
        return None;
    }
    Some(StreamRequest {
        id: id?,
        tenant: tenant?,
        name: name?,
        data: data.unwrap_or_default(),
        wait: wait.unwrap_or(true),
        timeout_ms: timeout_ms.flatten(),
    })
}

fn read_tenant(rd: &mut &[u8]) -> Option<Tenant> {
    let fields = rmp::decode::read_map_len(rd).ok()?;
    let (mut kind, mut id) = (None, None);
    for _ in 0..fields {
        match read_str(rd)? {
            "type" if kind.is_none() => kind = Some(read_str(rd)?.to_owned()),
            "id" if id.is_none() => id = Some(read_str(rd)?.to_owned()),
            _ => return None,
        }
    }
    Some(Tenant::new(kind?, id?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::{ErrorDetail, PluginResult};
    use serde_json::json;

    #[test]
    fn done_answers_are_written_as_serde_writes_them() {
        let value = |v: serde_json::Value| Some(Packed::from_value(&v));
        let results = vec![
            PluginResult {
                plugin: "echo".into(),
                value: value(json!({"data": "x".repeat(300), "n": [1, -2, 3.5, null]})),
                error: None,
            },
            PluginResult {
                plugin: "broken".into(),
                value: None,
                error: Some(ErrorDetail {
                    code: "runtime".into(),
                    message: "boom".into(),
                }),
            },
        ];
        for (id, worker, request_id, results) in [
            (0, 0, None, vec![]),
            (7, 1, Some("00000000000000ab".to_owned()), results.clone()),
            (u64::MAX, u32::MAX, None, results),
        ] {
            let done = Dispatched {
                tenant: Tenant::new("user", "é42"),
                worker,
                results,
                request_id,
            };
            let slow = encode(&StreamAnswer {
                id,
                done: Some(done.clone()),
                accepted: None,
                error: None,
            });
            assert_eq!(encode_done(id, &done), slow);
        }
    }

    #[test]
    fn requests_are_read_fast_as_serde_reads_them() {
        use serde::Serialize;
        let slow = |frame: &[u8]| rmp_serde::from_slice::<StreamRequest<Packed>>(frame).ok();
        let named = |r: &StreamRequest<serde_json::Value>| {
            let mut b = Vec::new();
            r.serialize(&mut rmp_serde::Serializer::new(&mut b).with_struct_map())
                .unwrap();
            b
        };
        let request = |timeout_ms, wait, data| StreamRequest {
            id: 9,
            tenant: Tenant::new("user", "é1"),
            name: "echo".into(),
            data,
            wait,
            timeout_ms,
        };
        let mut frames = vec![
            named(&request(None, true, json!({"x": [1, "two"]}))),
            named(&request(Some(250), false, json!("x".repeat(300)))),
            named(&request(Some(u64::MAX), true, json!(null))),
        ];
        // Written by hand: fields in another order, defaults left out, a
        // nil timeout, and frames the fast path leaves to serde (a field
        // twice, an unknown field, a string as bin, the id missing).
        let hand = |fields: &[(&str, &[u8])]| {
            let mut b = Vec::new();
            rmp::encode::write_map_len(&mut b, fields.len() as u32).unwrap();
            for (k, v) in fields {
                rmp::encode::write_str(&mut b, k).unwrap();
                b.extend_from_slice(v);
            }
            b
        };
        let tenant = [
            &[0x82, 0xa2, b'i', b'd', 0xa1, b'7', 0xa4][..],
            b"type",
            &[0xa1, b'u'],
        ]
        .concat();
        let name = [&[0xa4][..], b"ping"].concat();
        frames.push(hand(&[
            ("name", &name),
            ("tenant", &tenant),
            ("id", &[0x05]),
        ]));
        frames.push(hand(&[
            ("id", &[0x05]),
            ("tenant", &tenant),
            ("name", &name),
            ("timeout_ms", &[0xc0]),
        ]));
        let twice = hand(&[
            ("id", &[0x05]),
            ("id", &[0x06]),
            ("tenant", &tenant),
            ("name", &name),
        ]);
        let unknown = hand(&[
            ("id", &[0x05]),
            ("tenant", &tenant),
            ("name", &name),
            ("x", &[0x01]),
        ]);
        let bin = hand(&[
            ("id", &[0x05]),
            ("tenant", &tenant),
            ("name", &[0xc4, 0x01, b'p']),
        ]);
        let no_id = hand(&[("tenant", &tenant), ("name", &name)]);
        for frame in &frames {
            let fast = decode_request(frame);
            assert!(fast.is_some(), "{frame:?}");
            assert_eq!(fast, slow(frame));
            // Cut anywhere, neither takes it.
            for cut in 0..frame.len() {
                assert!(decode_request(&frame[..cut]).is_none(), "cut at {cut}");
                assert!(slow(&frame[..cut]).is_none(), "cut at {cut}");
            }
        }
        for frame in [&twice, &unknown, &bin, &no_id] {
            assert!(decode_request(frame).is_none(), "{frame:?}");
        }
        // What serde makes of those it still reads, it reads on its own.
        assert!(slow(&twice).is_none() && slow(&no_id).is_none());
        assert!(slow(&unknown).is_some() && slow(&bin).is_some());
    }
}
