//! Payloads between their wire form and Luau: [`unpack`] turns an event's
//! [`Packed`] data into Luau values, [`pack`] turns what a handler returns
//! into [`Packed`] bytes, each in one walk with no `serde_json::Value` (or
//! any other tree) in between.
//!
//! The mapping is JSON's, since JSON is what applications send and read:
//!
//! | MessagePack | Luau |
//! |---|---|
//! | nil | `nil` (a map entry whose value is nil is left out) |
//! | bool, integer, float | boolean, number |
//! | str, bin | string |
//! | array | table `{1, 2, ...}` marked as an array, so that `{}` from `[]` goes back as `[]` |
//! | map | table |
//!
//! Back, a table with a border (`#t > 0`) or the array mark is an array of
//! `#t` elements; any other table is a map, its keys written in byte order
//! (as a JSON object from the master always was). Map keys must be strings
//! or numbers; numbers become their decimal text, as they would in JSON.
//! A string that is not UTF-8, a function, a thread, a userdata, a table
//! that contains itself or one nested deeper than [`MAX_DEPTH`] cannot be
//! sent: [`pack`] says which. A Luau `buffer` goes as MessagePack bin (JSON
//! shows it as an array of byte values), a `vector` as an array of three
//! numbers.

use crate::mesophyll::message::Packed;
use mlua::{Lua, LuaSerdeExt, Table, Value};
use std::ffi::c_void;

/// How deep tables may nest, either way (mlua's own limit).
pub const MAX_DEPTH: usize = 128;

/// Builds the Luau value of `data`.
///
/// Fails with a runtime error for bytes that are not one MessagePack value
/// (a [`Packed`] from the master always is), for MessagePack extension
/// types, and for nesting deeper than [`MAX_DEPTH`]; with a memory error
/// when the VM's heap cap is reached.
pub fn unpack(lua: &Lua, data: &Packed) -> mlua::Result<Value> {
    let mut unpacker = Unpacker {
        lua,
        bytes: data.as_bytes(),
        array: None,
    };
    unpacker.value(0)
}

struct Unpacker<'a> {
    lua: &'a Lua,
    bytes: &'a [u8],
    /// mlua's array mark, fetched on the first array.
    array: Option<Table>,
}

fn malformed(what: &str) -> mlua::Error {
    mlua::Error::runtime(format!("event data is not MessagePack: {what}"))
}

impl<'a> Unpacker<'a> {
    fn take(&mut self, n: usize) -> mlua::Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn uint(&mut self, n: usize) -> mlua::Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn value(&mut self, depth: usize) -> mlua::Result<Value> {
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Value::Integer(i64::from(marker)),
            0xe0..=0xff => Value::Integer(i64::from(marker as i8)),
            0xc0 => Value::Nil,
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xcc => Value::Integer(self.uint(1)? as i64),
            0xcd => Value::Integer(self.uint(2)? as i64),
            0xce => Value::Integer(self.uint(4)? as i64),
            0xcf => match self.uint(8)? {
                n if n <= i64::MAX as u64 => Value::Integer(n as i64),
                n => Value::Number(n as f64),
            },
            0xd0 => Value::Integer(i64::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Integer(i64::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Integer(i64::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Integer(self.uint(8)? as i64),
            0xca => Value::Number(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Number(f64::from_bits(self.uint(8)?)),
            0xa0..=0xbf => self.string(usize::from(marker & 0x1f))?,
            0xd9 | 0xc4 => {
                let n = self.uint(1)? as usize;
                self.string(n)?
            }
            0xda | 0xc5 => {
                let n = self.uint(2)? as usize;
                self.string(n)?
            }
            0xdb | 0xc6 => {
                let n = self.uint(4)? as usize;
                self.string(n)?
            }
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth)?,
            0xdc => {
                let n = self.uint(2)? as usize;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.uint(4)? as usize;
                self.array(n, depth)?
            }
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0xde => {
                let n = self.uint(2)? as usize;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.uint(4)? as usize;
                self.map(n, depth)?
            }
            0xc1 => return Err(malformed("reserved marker 0xc1")),
            // fixext, ext 8/16/32
            _ => {
                return Err(mlua::Error::runtime(
                    "event data holds a MessagePack extension type, which Luau has no value for",
                ));
            }
        })
    }

    fn string(&mut self, n: usize) -> mlua::Result<Value> {
        let bytes = self.take(n)?;
        Ok(Value::String(self.lua.create_string(bytes)?))
    }

    fn nested(depth: usize) -> mlua::Result<usize> {
        if depth >= MAX_DEPTH {
            return Err(mlua::Error::runtime(format!(
                "event data nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(depth + 1)
    }

    fn array(&mut self, n: usize, depth: usize) -> mlua::Result<Value> {
        let depth = Self::nested(depth)?;
        // Every element takes at least a byte: a length beyond what is left
        // is a lie, and must not size the table.
        let t = self
            .lua
            .create_table_with_capacity(n.min(self.bytes.len()), 0)?;
        if self.array.is_none() {
            self.array = Some(self.lua.array_metatable());
        }
        t.set_metatable(self.array.clone())?;
        for i in 1..=n {
            let v = self.value(depth)?;
            if !v.is_nil() {
                t.raw_set(i, v)?;
            }
        }
        Ok(Value::Table(t))
    }

    fn map(&mut self, n: usize, depth: usize) -> mlua::Result<Value> {
        let depth = Self::nested(depth)?;
        let t = self
            .lua
            .create_table_with_capacity(0, n.min(self.bytes.len() / 2))?;
        for _ in 0..n {
            let k = self.value(depth)?;
            let v = self.value(depth)?;
            if k.is_nil() {
                return Err(malformed("a map key is nil"));
            }
            if !v.is_nil() {
                t.raw_set(k, v)?;
            }
        }
        Ok(Value::Table(t))
    }
}

/// Why a Luau value cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PackError(String);

/// Which metatable marks a table as an array in one VM (mlua's, the same
/// for the VM's life): looked up once per VM rather than per value.
#[derive(Debug, Clone, Copy)]
pub struct ArrayMark(usize);

impl ArrayMark {
    /// The mark of `lua`.
    pub fn of(lua: &Lua) -> ArrayMark {
        ArrayMark(lua.array_metatable().to_pointer() as usize)
    }
}

/// The [`Packed`] encoding of `value`, a value of the VM whose mark
/// `array` is.
///
/// Fails with a [`PackError`] naming what cannot be sent (see the module's
/// table), or when reading the VM fails (which it does only when the value
/// belongs to another VM).
pub fn pack(array: ArrayMark, value: &Value) -> Result<Packed, PackError> {
    let mut packer = Packer {
        out: Vec::with_capacity(64),
        array: array.0 as *const c_void,
        ancestors: Vec::new(),
    };
    packer.value(value)?;
    Ok(Packed::from_trusted(packer.out))
}

struct Packer {
    out: Vec<u8>,
    array: *const c_void,
    /// The tables being written, outermost first: one met again contains
    /// itself.
    ancestors: Vec<*const c_void>,
}

fn lua_error(e: mlua::Error) -> PackError {
    PackError(e.to_string())
}

// Writes to a Vec cannot fail: the `Result`s of rmp's writers are dropped.
impl Packer {
    fn value(&mut self, value: &Value) -> Result<(), PackError> {
        let out = &mut self.out;
        match value {
            Value::Nil => {
                let _ = rmp::encode::write_nil(out);
            }
            Value::LightUserData(p) if p.0.is_null() => {
                let _ = rmp::encode::write_nil(out);
            }
            Value::Boolean(b) => {
                let _ = rmp::encode::write_bool(out, *b);
            }
            Value::Integer(i) => {
                let _ = rmp::encode::write_sint(out, *i);
            }
            Value::Number(n) => {
                let _ = rmp::encode::write_f64(out, *n);
            }
            Value::Vector(v) => {
                let _ = rmp::encode::write_array_len(out, 3);
                for c in [v.x(), v.y(), v.z()] {
                    let _ = rmp::encode::write_f64(out, f64::from(c));
                }
            }
            Value::String(s) => {
                let s = s
                    .to_str()
                    .map_err(|_| PackError("a string that is not UTF-8 cannot be sent".into()))?;
                let _ = rmp::encode::write_str(out, &s);
            }
            Value::Buffer(b) => {
                let _ = rmp::encode::write_bin(out, &b.to_vec());
            }
            Value::Table(t) => self.table(t)?,
            other => {
                return Err(PackError(format!(
                    "a {} cannot be sent (only nil, booleans, numbers, strings, buffers, vectors and tables of them)",
                    other.type_name()
                )));
            }
        }
        Ok(())
    }

    fn table(&mut self, t: &Table) -> Result<(), PackError> {
        let me = t.to_pointer();
        if self.ancestors.contains(&me) {
            return Err(PackError(
                "a table that contains itself cannot be sent".into(),
            ));
        }
        if self.ancestors.len() >= MAX_DEPTH {
            return Err(PackError(format!(
                "tables nested deeper than {MAX_DEPTH} levels cannot be sent"
            )));
        }
        self.ancestors.push(me);
        let marked = t.metatable().is_some_and(|m| m.to_pointer() == self.array);
        let len = t.raw_len();
        if marked || len > 0 {
            let _ = rmp::encode::write_array_len(&mut self.out, len as u32);
            for i in 1..=len {
                let v: Value = t.raw_get(i).map_err(lua_error)?;
                self.value(&v)?;
            }
        } else {
            let mut entries: Vec<(Key, Value)> = Vec::new();
            let mut bad_key = None;
            t.for_each::<Value, Value>(|k, v| {
                match key(k) {
                    Ok(k) => entries.push((k, v)),
                    Err(e) => bad_key = Some(e),
                }
                Ok(())
            })
            .map_err(lua_error)?;
            if let Some(e) = bad_key {
                return Err(e);
            }
            if entries.len() > 1 {
                entries.sort_unstable_by(|a, b| a.0.with_bytes(|x| b.0.with_bytes(|y| x.cmp(y))));
            }
            let _ = rmp::encode::write_map_len(&mut self.out, entries.len() as u32);
            for (k, v) in &entries {
                k.with_bytes(|k| {
                    let _ = rmp::encode::write_str_len(&mut self.out, k.len() as u32);
                    self.out.extend_from_slice(k);
                });
                self.value(v)?;
            }
        }
        self.ancestors.pop();
        Ok(())
    }
}

/// A map key: a Luau string as it is (no copy), a number as its text.
enum Key {
    Lua(mlua::LuaString),
    Text(String),
}

impl Key {
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            Key::Lua(s) => f(&s.as_bytes()),
            Key::Text(s) => f(s.as_bytes()),
        }
    }
}

/// A map key as the JSON object key it becomes.
fn key(k: Value) -> Result<Key, PackError> {
    match k {
        Value::String(s) => match s.to_str() {
            Ok(_) => Ok(Key::Lua(s)),
            Err(_) => Err(PackError(
                "a table key that is not UTF-8 cannot be sent".into(),
            )),
        },
        Value::Integer(i) => Ok(Key::Text(i.to_string())),
        Value::Number(n) => Ok(Key::Text(n.to_string())),
        other => Err(PackError(format!(
            "a table key of type {} cannot be sent (keys must be strings or numbers)",
            other.type_name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: serde_json::Value) -> serde_json::Value {
        let lua = Lua::new();
        let luau = unpack(&lua, &Packed::from_value(&v)).unwrap();
        pack(ArrayMark::of(&lua), &luau).unwrap().to_value()
    }

    #[test]
    fn json_values_come_back_as_they_went() {
        for v in [
            json!(null),
            json!(true),
            json!(-3),
            json!(u32::MAX),
            json!(i64::MIN),
            json!(2.5),
            json!("héllo"),
            json!([]),
            json!({}),
            json!([1, "two", [3.5], {"four": 4}]),
            json!({"b": {"c": [true, false]}, "a": "x", "10": 1}),
        ] {
            assert_eq!(round_trip(v.clone()), v);
        }
        // A nil array element stays a hole: up to the border.
        assert_eq!(round_trip(json!([1, null, 3])), json!([1, null, 3]));
        // A nil map value is no entry.
        assert_eq!(round_trip(json!({"a": null, "b": 1})), json!({"b": 1}));
    }

    #[test]
    fn what_luau_returns_is_sent_as_json_would_see_it() {
        let lua = Lua::new();
        let packed = |code: &str| {
            let v: Value = lua.load(code).eval().unwrap();
            pack(ArrayMark::of(&lua), &v)
        };
        assert_eq!(
            packed("return {z = 1, a = {1, 2}, m = {}}")
                .unwrap()
                .to_string(),
            r#"{"a":[1,2],"m":{},"z":1}"#
        );
        assert_eq!(
            packed("return {[404] = 'gone', [200] = 'ok'}").unwrap(),
            json!({"200": "ok", "404": "gone"})
        );
        assert_eq!(
            packed("return buffer.fromstring('ab')").unwrap(),
            json!([97, 98])
        );
        assert_eq!(
            packed("return vector.create(1, 2, 3)").unwrap(),
            json!([1.0, 2.0, 3.0])
        );
        for (code, says) in [
            ("return function() end", "a function cannot be sent"),
            ("local t = {} t.me = t return t", "contains itself"),
            ("return {[true] = 1}", "keys must be strings or numbers"),
            ("return '\\255'", "not UTF-8"),
            (
                "local t = {} for i = 1, 200 do t = {t} end return t",
                "deeper than 128",
            ),
        ] {
            let e = packed(code).unwrap_err().to_string();
            assert!(e.contains(says), "{code}: {e}");
        }
        // The same table twice, side by side, is no cycle.
        assert_eq!(
            packed("local t = {1} return {t, t}").unwrap(),
            json!([[1], [1]])
        );
    }

    #[test]
    fn bad_bytes_and_depth_are_errors() {
        let lua = Lua::new();
        let deep = (0..200).fold(json!(1), |v, _| json!([v]));
        let e = unpack(&lua, &Packed::from_value(&deep)).unwrap_err();
        assert!(e.to_string().contains("deeper than 128"), "{e}");
        // A lying length fails as truncated, without sizing a table by it.
        let lie = Packed::from_trusted(vec![0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(
            unpack(&lua, &lie)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let ext = Packed::from_trusted(vec![0xd4, 0x01, 0x00]);
        assert!(
            unpack(&lua, &ext)
                .unwrap_err()
                .to_string()
                .contains("extension")
        );
    }
}
