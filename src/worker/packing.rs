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
use mlua::{Lua, LuaSerdeExt, Table, Value, ffi};
use std::ffi::{c_int, c_void};

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

/// The [`Packed`] encoding of `value`, a value of `lua` whose array mark
/// is `array`.
///
/// Fails with a [`PackError`] naming what cannot be sent (see the module's
/// table), or when the VM cannot make room on its stack for a table's
/// entries.
pub fn pack(lua: &Lua, array: ArrayMark, value: &Value) -> Result<Packed, PackError> {
    let mut out = Vec::with_capacity(64);
    let mut failed = None;
    // The walk reads the VM's own stack through Luau's C API: going
    // through mlua instead took a lock, a reference slot and a copy for
    // every key and value, which was a fifth of a worker's time.
    //
    // SAFETY: `exec_raw` holds the VM's lock and runs the closure as a
    // protected call with `value` at index 1 of its frame, restoring the
    // stack afterwards; the walk only reads values and pushes entries of
    // tables it is reading, after `lua_checkstack` made room.
    let called = unsafe {
        lua.exec_raw::<()>(value, |state| {
            let mut walk = Walk {
                state,
                out: &mut out,
                array: array.0 as *const c_void,
                ancestors: Vec::new(),
            };
            failed = walk.value(1).err();
            ffi::lua_settop(state, 0);
        })
    };
    called.map_err(|e| PackError(e.to_string()))?;
    match failed {
        Some(e) => Err(e),
        None => Ok(Packed::from_trusted(out)),
    }
}

/// One [`pack`] in progress, on the VM's stack.
struct Walk<'o> {
    state: *mut ffi::lua_State,
    out: &'o mut Vec<u8>,
    array: *const c_void,
    /// The tables being written, outermost first: one met again contains
    /// itself.
    ancestors: Vec<*const c_void>,
}

/// The bytes of the string at `idx`, valid while it stays on the stack.
///
/// # Safety
///
/// `idx` must hold a string (which `lua_tolstring` then reads without
/// converting), and the slice must not outlive its place on the stack.
unsafe fn string_at<'s>(state: *mut ffi::lua_State, idx: c_int) -> &'s [u8] {
    let mut len = 0usize;
    // SAFETY: as the caller promised.
    unsafe {
        let p = ffi::lua_tolstring(state, idx, &mut len);
        std::slice::from_raw_parts(p.cast::<u8>(), len)
    }
}

/// mlua's names for Luau's types, so that messages read as before.
fn type_name(t: c_int) -> &'static str {
    match t {
        ffi::LUA_TNIL => "nil",
        ffi::LUA_TBOOLEAN => "boolean",
        ffi::LUA_TLIGHTUSERDATA => "lightuserdata",
        ffi::LUA_TNUMBER | ffi::LUA_TINTEGER => "number",
        ffi::LUA_TVECTOR => "vector",
        ffi::LUA_TSTRING => "string",
        ffi::LUA_TTABLE => "table",
        ffi::LUA_TFUNCTION => "function",
        ffi::LUA_TUSERDATA => "userdata",
        ffi::LUA_TTHREAD => "thread",
        ffi::LUA_TBUFFER => "buffer",
        _ => "value",
    }
}

/// A Luau number as mlua reads it: an integer when it is one exactly.
fn integral(n: f64) -> Option<i64> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if (-TWO_63..TWO_63).contains(&n) {
        let i = n as i64;
        ((i as f64).to_bits() == n.to_bits()).then_some(i)
    } else {
        None
    }
}

/// A map key as the JSON object key it becomes: a Luau string's bytes
/// where the key sits on the stack (valid while it does), or a number's
/// text.
enum Key {
    Lua(*const u8, usize),
    Text(String),
}

impl Key {
    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: the string is on the stack, below the entries being
            // written, until the table's walk pops it.
            Key::Lua(p, n) => unsafe { std::slice::from_raw_parts(*p, *n) },
            Key::Text(s) => s.as_bytes(),
        }
    }
}

// Writes to a Vec cannot fail: the `Result`s of rmp's writers are dropped.
// Every function takes an absolute stack index.
impl Walk<'_> {
    fn room(&self, slots: c_int) -> Result<(), PackError> {
        // SAFETY: the state is the one `exec_raw` gave; growing its stack
        // moves no value a `Key` points at (strings live on the heap).
        if unsafe { ffi::lua_checkstack(self.state, slots) } == 0 {
            return Err(PackError(
                "a table too large for the VM's stack cannot be sent".into(),
            ));
        }
        Ok(())
    }

    fn value(&mut self, idx: c_int) -> Result<(), PackError> {
        let state = self.state;
        // SAFETY (every call below): `idx` is a valid index of this frame
        // and each reader is the one for the type `lua_type` reported.
        let t = unsafe { ffi::lua_type(state, idx) };
        match t {
            ffi::LUA_TNIL => {
                let _ = rmp::encode::write_nil(self.out);
            }
            ffi::LUA_TLIGHTUSERDATA if unsafe { ffi::lua_touserdata(state, idx) }.is_null() => {
                let _ = rmp::encode::write_nil(self.out);
            }
            ffi::LUA_TBOOLEAN => {
                let _ = rmp::encode::write_bool(self.out, unsafe {
                    ffi::lua_toboolean(state, idx) != 0
                });
            }
            ffi::LUA_TINTEGER => {
                let i = unsafe { ffi::lua_tointeger64(state, idx, std::ptr::null_mut()) };
                let _ = rmp::encode::write_sint(self.out, i);
            }
            ffi::LUA_TNUMBER => {
                let n = unsafe { ffi::lua_tonumber(state, idx) };
                let _ = match integral(n) {
                    Some(i) => rmp::encode::write_sint(self.out, i).map(drop),
                    None => rmp::encode::write_f64(self.out, n),
                };
            }
            ffi::LUA_TVECTOR => {
                let v = unsafe { ffi::lua_tovector(state, idx) };
                let _ = rmp::encode::write_array_len(self.out, 3);
                for c in 0..3 {
                    let c = unsafe { *v.add(c) };
                    let _ = rmp::encode::write_f64(self.out, f64::from(c));
                }
            }
            ffi::LUA_TSTRING => {
                let s = std::str::from_utf8(unsafe { string_at(state, idx) })
                    .map_err(|_| PackError("a string that is not UTF-8 cannot be sent".into()))?;
                let _ = rmp::encode::write_str(self.out, s);
            }
            ffi::LUA_TBUFFER => {
                let mut len = 0usize;
                let bytes = unsafe {
                    let p = ffi::lua_tobuffer(state, idx, &mut len);
                    std::slice::from_raw_parts(p.cast::<u8>(), len)
                };
                let _ = rmp::encode::write_bin(self.out, bytes);
            }
            ffi::LUA_TTABLE => self.table(idx)?,
            other => {
                return Err(PackError(format!(
                    "a {} cannot be sent (only nil, booleans, numbers, strings, buffers, vectors and tables of them)",
                    type_name(other)
                )));
            }
        }
        Ok(())
    }

    fn table(&mut self, idx: c_int) -> Result<(), PackError> {
        let state = self.state;
        // SAFETY: `idx` holds a table.
        let me = unsafe { ffi::lua_topointer(state, idx) };
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
        // SAFETY: both read the table at `idx` without pushing or calling
        // metamethods.
        let marked = unsafe { ffi::lua_getmetatablepointer(state, idx) } == self.array;
        let len = unsafe { ffi::lua_objlen(state, idx) };
        if marked || len > 0 {
            let _ = rmp::encode::write_array_len(self.out, len as u32);
            self.room(1)?;
            for i in 1..=len {
                // SAFETY: room for the one slot was made above; it is
                // popped before the next.
                unsafe { ffi::lua_rawgeti_(state, idx, i as c_int) };
                let top = unsafe { ffi::lua_gettop(state) };
                self.value(top)?;
                unsafe { ffi::lua_pop(state, 1) };
            }
        } else {
            self.map(idx)?;
        }
        self.ancestors.pop();
        Ok(())
    }

    /// Every entry's key and value go on the stack, then are written in
    /// the keys' byte order.
    fn map(&mut self, idx: c_int) -> Result<(), PackError> {
        let state = self.state;
        // SAFETY: reading the stack this walk owns.
        let base = unsafe { ffi::lua_gettop(state) };
        let mut entries: Vec<(Key, c_int)> = Vec::new();
        let mut iter = 0;
        loop {
            self.room(2)?;
            // SAFETY: `lua_rawiter` pushes the next key and value (room made
            // above) or nothing once the table is done.
            iter = unsafe { ffi::lua_rawiter(state, idx, iter) };
            if iter < 0 {
                break;
            }
            let top = unsafe { ffi::lua_gettop(state) };
            let key = match unsafe { ffi::lua_type(state, top - 1) } {
                ffi::LUA_TSTRING => {
                    let s = unsafe { string_at(state, top - 1) };
                    if std::str::from_utf8(s).is_err() {
                        return Err(PackError(
                            "a table key that is not UTF-8 cannot be sent".into(),
                        ));
                    }
                    Key::Lua(s.as_ptr(), s.len())
                }
                ffi::LUA_TINTEGER => Key::Text(
                    unsafe { ffi::lua_tointeger64(state, top - 1, std::ptr::null_mut()) }
                        .to_string(),
                ),
                ffi::LUA_TNUMBER => {
                    let n = unsafe { ffi::lua_tonumber(state, top - 1) };
                    Key::Text(match integral(n) {
                        Some(i) => i.to_string(),
                        None => n.to_string(),
                    })
                }
                other => {
                    return Err(PackError(format!(
                        "a table key of type {} cannot be sent (keys must be strings or numbers)",
                        type_name(other)
                    )));
                }
            };
            entries.push((key, top));
        }
        if entries.len() > 1 {
            entries.sort_unstable_by(|a, b| a.0.bytes().cmp(b.0.bytes()));
        }
        let _ = rmp::encode::write_map_len(self.out, entries.len() as u32);
        for (key, at) in &entries {
            let k = key.bytes();
            let _ = rmp::encode::write_str_len(self.out, k.len() as u32);
            self.out.extend_from_slice(k);
            self.value(*at)?;
        }
        drop(entries);
        // SAFETY: back to where the walk of this table started.
        unsafe { ffi::lua_settop(state, base) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: serde_json::Value) -> serde_json::Value {
        let lua = Lua::new();
        let luau = unpack(&lua, &Packed::from_value(&v)).unwrap();
        pack(&lua, ArrayMark::of(&lua), &luau).unwrap().to_value()
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
            pack(&lua, ArrayMark::of(&lua), &v)
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
        // Numbers as mlua reads them: integral ones as integers, -0 and
        // fractions as floats, keys as their text.
        assert_eq!(
            packed("return {2^53, -0.0, 0.5, {[1.5] = 'x', [-2] = 'y'}}")
                .unwrap()
                .to_string(),
            r#"[9007199254740992,-0.0,0.5,{"-2":"y","1.5":"x"}]"#
        );
        // Maps larger than the VM's stack starts with, nested in arrays.
        let big =
            packed("local m = {} for i = 1, 3000 do m['k' .. i] = {i, {v = i}} end return {m, m}")
                .unwrap()
                .to_value();
        let m: serde_json::Map<String, serde_json::Value> = (1..=3000)
            .map(|i| (format!("k{i}"), json!([i, {"v": i}])))
            .collect();
        assert_eq!(big, json!([m.clone(), m]));
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
