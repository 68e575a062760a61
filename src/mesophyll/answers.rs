//! The frames a dispatch sends most, written and read by hand so that a
//! payload's bytes are copied whole into and out of them, where serde would
//! replay a [`Packed`] value token by token: the worker's answer
//! (`DispatchResponse { req_id, result: Ok(value) }`, [`encode_answer`],
//! read by the hub with [`decode_answer`]) and the result list inside it
//! ([`encode_outcomes`]). Each writes exactly the bytes [`codec::encode`](crate::mesophyll::codec::encode)
//! would, and reads only what [`codec::decode`](crate::mesophyll::codec::decode) takes; the codec's property
//! tests and the frames fuzz target hold them to that.

use crate::mesophyll::codec::{CodecError, MAX_FRAME_BYTES};
use crate::mesophyll::message::{PluginOutcome, RemoteError};
use crate::mesophyll::packed::Packed;
use serde::Serialize;

/// Encodes `DispatchResponse { req_id, result: Ok(value) }`, the frame a
/// worker sends most, byte for byte as [`codec::encode`](crate::mesophyll::codec::encode) would, but with the
/// value's bytes copied in as they are instead of replayed token by token.
///
/// Fails with [`CodecError::TooLarge`] as [`codec::encode`](crate::mesophyll::codec::encode) does.
pub fn encode_answer(req_id: u64, value: &Packed) -> Result<Vec<u8>, CodecError> {
    let value = value.as_bytes();
    let mut bytes = Vec::with_capacity(value.len() + 48);
    // {"DispatchResponse": {"req_id": req_id, "result": {"Ok": value}}}:
    // rmp-serde writes an enum variant as a map of one entry, and a struct
    // with field names as a map. Writes to a Vec cannot fail.
    let _ = rmp::encode::write_map_len(&mut bytes, 1);
    let _ = rmp::encode::write_str(&mut bytes, "DispatchResponse");
    let _ = rmp::encode::write_map_len(&mut bytes, 2);
    let _ = rmp::encode::write_str(&mut bytes, "req_id");
    let _ = rmp::encode::write_uint(&mut bytes, req_id);
    let _ = rmp::encode::write_str(&mut bytes, "result");
    let _ = rmp::encode::write_map_len(&mut bytes, 1);
    let _ = rmp::encode::write_str(&mut bytes, "Ok");
    bytes.extend_from_slice(value);
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(bytes)
}

/// Decodes a frame that is `DispatchResponse { req_id, result: Ok(value) }`
/// as [`encode_answer`] writes it, with the value's bytes copied out as
/// they are instead of replayed token by token; `None` for any other frame
/// (decode those with [`codec::decode`](crate::mesophyll::codec::decode)).
pub fn decode_answer(bytes: &[u8]) -> Option<(u64, Packed)> {
    if bytes.len() > MAX_FRAME_BYTES {
        return None;
    }
    let mut rd = bytes;
    if rmp::decode::read_map_len(&mut rd).ok()? != 1 || !read_key(&mut rd, "DispatchResponse") {
        return None;
    }
    let fields = rmp::decode::read_map_len(&mut rd).ok()?;
    let (mut req_id, mut value) = (None, None);
    for _ in 0..fields {
        let mut name = [0u8; 8];
        let name = rmp::decode::read_str(&mut rd, &mut name).ok()?;
        match name {
            "req_id" if req_id.is_none() => req_id = Some(rmp::decode::read_int(&mut rd).ok()?),
            "result" if value.is_none() => {
                if rmp::decode::read_map_len(&mut rd).ok()? != 1 || !read_key(&mut rd, "Ok") {
                    return None;
                }
                let len = value_len(rd, 0)?;
                value = Some(Packed::from_trusted(rd[..len].to_vec()));
                rd = &rd[len..];
            }
            _ => return None,
        }
    }
    if !rd.is_empty() {
        return None;
    }
    Some((req_id?, value?))
}

/// Reads a result list as [`encode_outcomes`] writes it when every plugin
/// answered with a value, each value's bytes copied out whole; `None` for
/// any other list (one holding an error, or written another way), which
/// [`Packed::decode`] reads instead. What it reads, it reads as that
/// decoder would.
pub fn decode_outcomes(list: &Packed) -> Option<Vec<PluginOutcome>> {
    let mut rd = list.as_bytes();
    let n = rmp::decode::read_array_len(&mut rd).ok()? as usize;
    // Every entry takes bytes: a count beyond them is a lie.
    let mut outcomes = Vec::with_capacity(n.min(rd.len()));
    for _ in 0..n {
        if rmp::decode::read_map_len(&mut rd).ok()? != 2 || !read_key(&mut rd, "plugin") {
            return None;
        }
        let plugin = read_str(&mut rd)?.to_owned();
        if !read_key(&mut rd, "result")
            || rmp::decode::read_map_len(&mut rd).ok()? != 1
            || !read_key(&mut rd, "Ok")
        {
            return None;
        }
        let len = value_len(rd, 0)?;
        outcomes.push(PluginOutcome {
            plugin,
            result: Ok(Packed::from_trusted(rd[..len].to_vec())),
        });
        rd = &rd[len..];
    }
    rd.is_empty().then_some(outcomes)
}

/// Takes the MessagePack str (not bin) at the start of `rd`, checked to be
/// UTF-8; `None` when it is not one.
pub fn read_str<'a>(rd: &mut &'a [u8]) -> Option<&'a str> {
    let mut at = *rd;
    let len = rmp::decode::read_str_len(&mut at).ok()? as usize;
    let text = std::str::from_utf8(at.get(..len)?).ok()?;
    *rd = &at[len..];
    Some(text)
}

/// Takes the MessagePack value at the start of `rd` whole, checked as the
/// full decoder would check it (whole, strings UTF-8), and copies it out;
/// `None` (with `rd` where it was) when it is not one.
pub fn read_value(rd: &mut &[u8]) -> Option<Packed> {
    let len = value_len(rd, 0)?;
    let value = Packed::from_trusted(rd[..len].to_vec());
    *rd = &rd[len..];
    Some(value)
}

fn read_key(rd: &mut &[u8], key: &str) -> bool {
    let mut buf = [0u8; 16];
    matches!(rmp::decode::read_str(rd, &mut buf), Ok(k) if k == key)
}

/// The length of the MessagePack value at the start of `bytes`, checked
/// to be whole and its strings UTF-8, as the full decoder would have them;
/// `None` when it is not (or nests past the decoder's depth).
fn value_len(bytes: &[u8], depth: usize) -> Option<usize> {
    if depth > 1024 {
        return None;
    }
    let marker = *bytes.first()?;
    let be = |n: usize| -> Option<usize> {
        let b = bytes.get(1..1 + n)?;
        Some(b.iter().fold(0usize, |acc, x| (acc << 8) | usize::from(*x)))
    };
    // (bytes before the payload, payload bytes, nested values)
    let (head, body, items): (usize, usize, usize) = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
        0xcc | 0xd0 => (1, 1, 0),
        0xcd | 0xd1 => (1, 2, 0),
        0xce | 0xd2 | 0xca => (1, 4, 0),
        0xcf | 0xd3 | 0xcb => (1, 8, 0),
        0xa0..=0xbf => (1, usize::from(marker & 0x1f), 0),
        0xd9 | 0xc4 => (2, be(1)?, 0),
        0xda | 0xc5 => (3, be(2)?, 0),
        0xdb | 0xc6 => (5, be(4)?, 0),
        0x90..=0x9f => (1, 0, usize::from(marker & 0x0f)),
        0xdc => (3, 0, be(2)?),
        0xdd => (5, 0, be(4)?),
        0x80..=0x8f => (1, 0, 2 * usize::from(marker & 0x0f)),
        0xde => (3, 0, 2 * be(2)?),
        0xdf => (5, 0, 2 * be(4)?),
        0xd4 => (2, 1, 0),
        0xd5 => (2, 2, 0),
        0xd6 => (2, 4, 0),
        0xd7 => (2, 8, 0),
        0xd8 => (2, 16, 0),
        0xc7 => (3, be(1)?, 0),
        0xc8 => (4, be(2)?, 0),
        0xc9 => (6, be(4)?, 0),
        _ => return None,
    };
    let mut len = head.checked_add(body)?;
    if len > bytes.len() {
        return None;
    }
    let is_str = matches!(marker, 0xa0..=0xbf | 0xd9 | 0xda | 0xdb);
    if is_str && std::str::from_utf8(&bytes[head..len]).is_err() {
        return None;
    }
    for _ in 0..items {
        len += value_len(&bytes[len..], depth + 1)?;
    }
    Some(len)
}

/// The result list of a `DispatchEvent`, `[{plugin, result}, ...]`, as
/// [`Packed::encode`] would write it, with each handler's value copied in
/// as it is.
pub fn encode_outcomes(outcomes: &[PluginOutcome]) -> Packed {
    let mut bytes = Vec::with_capacity(
        16 + outcomes
            .iter()
            .map(|o| o.plugin.len() + o.result.as_ref().map_or(64, |v| v.as_bytes().len()) + 24)
            .sum::<usize>(),
    );
    // Writes to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut bytes, outcomes.len() as u32);
    for o in outcomes {
        let _ = rmp::encode::write_map_len(&mut bytes, 2);
        let _ = rmp::encode::write_str(&mut bytes, "plugin");
        let _ = rmp::encode::write_str(&mut bytes, &o.plugin);
        let _ = rmp::encode::write_str(&mut bytes, "result");
        match &o.result {
            Ok(value) => {
                let _ = rmp::encode::write_map_len(&mut bytes, 1);
                let _ = rmp::encode::write_str(&mut bytes, "Ok");
                bytes.extend_from_slice(value.as_bytes());
            }
            Err(e) => {
                let error: Result<(), &RemoteError> = Err(e);
                let _ =
                    error.serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map());
            }
        }
    }
    Packed::from_trusted(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesophyll::codec;
    use crate::mesophyll::message::ClientMessage;
    use serde_json::json;

    #[test]
    fn the_answer_fast_path_takes_nothing_the_decoder_refuses() {
        let frame = |value: &[u8], extra: &[u8]| {
            let mut f = vec![0x81];
            rmp::encode::write_str(&mut f, "DispatchResponse").unwrap();
            rmp::encode::write_map_len(&mut f, if extra.is_empty() { 2 } else { 3 }).unwrap();
            rmp::encode::write_str(&mut f, "req_id").unwrap();
            rmp::encode::write_uint(&mut f, 5).unwrap();
            rmp::encode::write_str(&mut f, "result").unwrap();
            rmp::encode::write_map_len(&mut f, 1).unwrap();
            rmp::encode::write_str(&mut f, "Ok").unwrap();
            f.extend_from_slice(value);
            f.extend_from_slice(extra);
            f
        };
        let good = frame(&[0xa2, b'o', b'k'], &[]);
        assert_eq!(decode_answer(&good).unwrap().1.to_value(), json!("ok"));
        // A string that is not UTF-8, a second req_id, bytes after the end.
        let not_utf8 = frame(&[0xa2, 0xff, 0xfe], &[]);
        assert!(decode_answer(&not_utf8).is_none());
        let twice = frame(&[0xc0], &[0xa6, b'r', b'e', b'q', b'_', b'i', b'd', 0x06]);
        assert!(decode_answer(&twice).is_none());
        assert!(codec::decode::<ClientMessage>(&twice).is_err());
        let mut trailing = good.clone();
        trailing.push(0xc0);
        assert!(decode_answer(&trailing).is_none());
    }

    #[test]
    fn result_lists_read_fast_as_the_decoder_reads_them() {
        let ok = |plugin: &str, v: serde_json::Value| PluginOutcome {
            plugin: plugin.into(),
            result: Ok(Packed::from_value(&v)),
        };
        let lists = [
            vec![],
            vec![ok("echo", json!({"data": [1, "x"], "tenant": {"id": "1"}}))],
            vec![ok("a", json!(null)), ok("b", json!(2.5))],
        ];
        for list in lists {
            let packed = encode_outcomes(&list);
            assert_eq!(decode_outcomes(&packed), Some(list.clone()));
            assert_eq!(packed.decode::<Vec<PluginOutcome>>().unwrap(), list);
            // Cut anywhere, it is refused, as the decoder refuses it.
            let bytes = packed.as_bytes();
            for cut in 0..bytes.len() {
                let short = Packed::from_trusted(bytes[..cut].to_vec());
                assert!(decode_outcomes(&short).is_none(), "cut at {cut}");
            }
        }
        // An error among them, or a plugin name that is not UTF-8: left to
        // the decoder.
        let failed = vec![PluginOutcome {
            plugin: "p".into(),
            result: Err(RemoteError::new(
                crate::mesophyll::message::ErrorKind::Runtime,
                "boom",
            )),
        }];
        assert!(decode_outcomes(&encode_outcomes(&failed)).is_none());
        let mut bad = encode_outcomes(&[ok("pé", json!(1))]).as_bytes().to_vec();
        let at = bad.iter().position(|b| *b == 0xc3).unwrap();
        bad[at] = 0xff;
        let bad = Packed::from_trusted(bad);
        assert!(decode_outcomes(&bad).is_none());
        assert!(bad.decode::<Vec<PluginOutcome>>().is_err());
    }
}
