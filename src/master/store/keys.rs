//! How records are keyed in an ordered key-value backend: key parts joined
//! with an order-preserving encoding (a 0 byte becomes `00 ff`, each part
//! ends with `00 01`), so that a tenant's keys, and a scope's keys within
//! it, are contiguous and sorted, and prefix scans serve `Find` and
//! `ListScopes`. Values are MessagePack.

use super::StoreError;
use crate::mesophyll::message::Tenant;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Appends one key part in the order-preserving encoding.
pub fn push_part(buf: &mut Vec<u8>, part: &[u8]) {
    for &b in part {
        if b == 0 {
            buf.extend_from_slice(&[0, 0xff]);
        } else {
            buf.push(b);
        }
    }
    buf.extend_from_slice(&[0, 1]);
}

/// The parts of a key made by [`key_of`]; `None` for bytes that are not
/// such a key.
pub fn split(key: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut bytes = key.iter().copied();
    while let Some(b) = bytes.next() {
        if b != 0 {
            part.push(b);
            continue;
        }
        match bytes.next()? {
            0xff => part.push(0),
            1 => parts.push(std::mem::take(&mut part)),
            _ => return None,
        }
    }
    part.is_empty().then_some(parts)
}

/// The tenant a `tenant_states` key names.
pub fn tenant_of(key: &[u8]) -> Option<Tenant> {
    match split(key)?.as_slice() {
        [kind, id] => Some(Tenant::new(
            String::from_utf8(kind.clone()).ok()?,
            String::from_utf8(id.clone()).ok()?,
        )),
        _ => None,
    }
}

/// `parts`, each encoded and terminated.
pub fn key_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut buf = Vec::new();
    for p in parts {
        push_part(&mut buf, p);
    }
    buf
}

/// The smallest key greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A record as stored.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("store records always encode")
}

/// A stored record, or [`StoreError::Corrupt`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The prefix of every key of `tenant`.
pub fn tenant_prefix(tenant: &Tenant) -> Vec<u8> {
    key_of(&[tenant.kind.as_bytes(), tenant.id.as_bytes()])
}

/// The key of one KV record.
pub fn kv_key(tenant: &Tenant, scope: &str, key: &str) -> Vec<u8> {
    key_of(&[
        tenant.kind.as_bytes(),
        tenant.id.as_bytes(),
        scope.as_bytes(),
        key.as_bytes(),
    ])
}

/// The key of one global entry: versions sort numerically.
pub fn global_key(scope: &str, key: &str, version: u32) -> Vec<u8> {
    key_of(&[scope.as_bytes(), key.as_bytes(), &version.to_be_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_never_runs_into_the_next() {
        // "a" + "b\0c" must not share a prefix relation with "a\0b" + "c".
        let one = key_of(&[b"a", b"b\0c"]);
        let two = key_of(&[b"a\0b", b"c"]);
        assert_ne!(one, two);
        assert!(!one.starts_with(&two) && !two.starts_with(&one));
        // A tenant's prefix covers its keys and nobody else's.
        let t = Tenant::new("user", "1");
        let other = Tenant::new("user", "10");
        assert!(kv_key(&t, "s", "k").starts_with(&tenant_prefix(&t)));
        assert!(!kv_key(&other, "s", "k").starts_with(&tenant_prefix(&t)));
    }

    #[test]
    fn keys_split_back_into_their_parts() {
        let t = Tenant::new("gu\0ild", "7");
        assert_eq!(tenant_of(&tenant_prefix(&t)), Some(t));
        assert_eq!(
            split(&key_of(&[b"a", b"", b"\0\x01"])),
            Some(vec![b"a".to_vec(), vec![], b"\0\x01".to_vec()])
        );
        assert_eq!(split(b"abc"), None);
        assert_eq!(split(&[b'a', 0, 7]), None);
    }

    #[test]
    fn prefix_end_bounds_every_key_of_the_prefix() {
        let p = tenant_prefix(&Tenant::new("user", "1"));
        let end = prefix_end(&p).unwrap();
        assert!(kv_key(&Tenant::new("user", "1"), "\u{10ffff}", "z") < end);
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert!(global_key("s", "k", 2) < global_key("s", "k", 10));
    }
}
