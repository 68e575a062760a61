//! HTTP fields as proxy-wasm sees them: ordered (name, value) pairs per map
//! type, the ABI's serialisation of a map, and the host functions over
//! them.
//!
//! Names are kept in lower case and looked up in lower case, as Envoy's
//! HTTP/2-style header maps do. Only the request headers (map 0) have
//! content; the other map types exist so that an SDK that reads them gets
//! an empty map (the Rust SDK panics on anything but `OK`).

use super::guest::{give, read, write_u32};
use super::{HostState, Status, answer};
use wasmtime::{Caller, Linker};

/// A map: (lower-case name, value) in order, repeats allowed.
pub(super) type Fields = Vec<(String, Vec<u8>)>;

/// How many map types the ABI names (`HTTP_REQUEST_HEADERS` = 0 to
/// `HTTP_CALL_RESPONSE_TRAILERS` = 7).
pub(super) const MAP_TYPES: usize = 8;

/// The most bytes of names and values one map may hold.
pub(super) const MAX_FIELDS_BYTES: usize = 256 * 1024;

/// The map in the ABI's serialisation: the number of pairs, each pair's
/// two lengths, then each name and value followed by a NUL (all integers
/// little-endian u32).
pub(super) fn serialize(fields: &Fields) -> Vec<u8> {
    if fields.is_empty() {
        return Vec::new();
    }
    let data: usize = fields.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + 8 * fields.len() + data);
    out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    for (k, v) in fields {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// A serialised map read back; `None` when the bytes do not hold one.
pub(super) fn parse(bytes: &[u8]) -> Option<Fields> {
    if bytes.len() <= 1 {
        // Empty, or the single 0x00 byte the ABI also allows.
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    };
    let n = u32_at(0)?;
    let mut data = 4usize.checked_add(n.checked_mul(8)?)?;
    if data > bytes.len() {
        return None;
    }
    let mut fields = Vec::with_capacity(n);
    for i in 0..n {
        let (klen, vlen) = (u32_at(4 + 8 * i)?, u32_at(8 + 8 * i)?);
        let key = bytes.get(data..data.checked_add(klen)?)?;
        data += klen + 1;
        let value = bytes.get(data..data.checked_add(vlen)?)?;
        data += vlen + 1;
        fields.push((name(key), value.to_vec()));
    }
    Some(fields)
}

fn name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_ascii_lowercase()
}

fn weight(fields: &Fields) -> usize {
    fields.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn map<'a>(caller: &'a mut Caller<'_, HostState>, map_type: i32) -> Result<&'a mut Fields, Status> {
    caller
        .data_mut()
        .maps
        .get_mut(map_type as u32 as usize)
        .ok_or(Status::BadArgument)
}

/// Adds `value` under `key` (after removing every earlier value when
/// `replace`), within the map's byte budget.
fn put(
    caller: &mut Caller<'_, HostState>,
    map_type: i32,
    key: (i32, i32),
    value: (i32, i32),
    replace: bool,
) -> Result<(), Status> {
    let key = name(&read(caller, key.0, key.1)?);
    let value = read(caller, value.0, value.1)?;
    let fields = map(caller, map_type)?;
    if replace {
        fields.retain(|(k, _)| *k != key);
    }
    if weight(fields) + key.len() + value.len() > MAX_FIELDS_BYTES {
        return Err(Status::BadArgument);
    }
    fields.push((key, value));
    Ok(())
}

/// Adds the header-map functions to `linker`.
pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Caller<'_, HostState>, map_type: i32, size_at: i32| -> i32 {
            let size = match map(&mut caller, map_type) {
                Ok(fields) => serialize(fields).len(),
                Err(s) => return s as i32,
            };
            answer(write_u32(&mut caller, size_at, size as u32))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map_type: i32, data_at: i32, size_at: i32| {
            let bytes = match map(&mut caller, map_type) {
                Ok(fields) => serialize(fields),
                Err(s) => return Ok(s as i32),
            };
            give(&mut caller, &bytes, data_at, size_at)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map_type: i32, data: i32, size: i32| -> i32 {
            let mut set = || -> Result<(), Status> {
                let fields = parse(&read(&caller, data, size)?).ok_or(Status::BadArgument)?;
                if weight(&fields) > MAX_FIELDS_BYTES {
                    return Err(Status::BadArgument);
                }
                *map(&mut caller, map_type)? = fields;
                Ok(())
            };
            answer(set())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map_type: i32,
         key: i32,
         key_len: i32,
         data_at: i32,
         size_at: i32| {
            let found = read(&caller, key, key_len).and_then(|key| {
                let key = name(&key);
                map(&mut caller, map_type)?
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.clone())
                    .ok_or(Status::NotFound)
            });
            match found {
                Ok(value) => give(&mut caller, &value, data_at, size_at),
                Err(s) => Ok(s as i32),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, HostState>, map_type: i32, k: i32, kl: i32, v: i32, vl: i32| {
            answer(put(&mut caller, map_type, (k, kl), (v, vl), false))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, HostState>, map_type: i32, k: i32, kl: i32, v: i32, vl: i32| {
            answer(put(&mut caller, map_type, (k, kl), (v, vl), true))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, map_type: i32, k: i32, kl: i32| -> i32 {
            let removed = read(&caller, k, kl).and_then(|key| {
                let key = name(&key);
                map(&mut caller, map_type)?.retain(|(n, _)| *n != key);
                Ok(())
            });
            answer(removed)
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_serialize_as_the_spec_shows() {
        let fields: Fields = vec![("a".into(), b"1".to_vec()), ("b".into(), b"22".to_vec())];
        let bytes = serialize(&fields);
        assert_eq!(
            bytes,
            [
                2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b',
                0, b'2', b'2', 0
            ]
        );
        assert_eq!(parse(&bytes), Some(fields));
        assert_eq!(parse(&[]), Some(vec![]));
        assert_eq!(parse(&[0]), Some(vec![]));
    }

    #[test]
    fn broken_maps_are_refused_not_read_past_their_end() {
        let good = serialize(&vec![("name".into(), b"value".to_vec())]);
        for cut in 2..good.len() - 1 {
            assert_eq!(parse(&good[..cut]), None, "cut at {cut}");
        }
        // A count that claims more pairs than the bytes hold.
        assert_eq!(parse(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]), None);
        assert_eq!(parse(&[5, 0, 0, 0]), None);
    }
}
