//! Payloads between their wire form and Luau: [`Packing::unpack`] turns
//! an event's [`Packed`] data into Luau values, [`Packing::pack`] turns what
//! a handler returns into [`Packed`] bytes, each in one walk with no
//! `serde_json::Value` (or any other tree) in between.
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
//! sent: [`Packing::pack`] says which. A Luau `buffer` goes as MessagePack bin (JSON
//! shows it as an array of byte values), a `vector` as an array of three
//! numbers.
//!
//! Both work on the VM's stack through Luau's C API, each in one protected
//! call (`unpack.rs`, `walk.rs`): through mlua's API every key, value and
//! table was a lock, a reference slot and often a protected call of its
//! own, which made packing a fifth of a worker's time.
//!
//! Modules:
//!
//! - `unpack`: event data into Luau values;
//! - `walk`: a handler's result into MessagePack.

mod unpack;
mod walk;

use crate::mesophyll::message::Packed;
use mlua::{Function, LightUserData, Lua, LuaSerdeExt, Table, Value};
use std::ffi::c_void;

/// How deep tables may nest, either way (mlua's own limit).
pub const MAX_DEPTH: usize = 128;

/// The most bytes a packed value may take: a result must fit in one
/// Mesophyll frame with its envelope. The walk stops as soon as it passes
/// this, so a value built to be huge (one string referenced a thousand
/// times, a table whose border is 2^29) costs at most this much to refuse.
pub const MAX_PACKED_BYTES: usize = crate::mesophyll::codec::MAX_FRAME_BYTES - 64 * 1024;

/// Why a Luau value cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Its encoding passed the limit (in bytes) while it was being written.
    #[error(
        "it is over {0} bytes once encoded (a value referenced several times counts each time)"
    )]
    TooLarge(usize),
    /// It holds something that cannot be sent (the message says what).
    #[error("{0}")]
    Unsendable(String),
}

/// One VM's way in and out: its two walks registered once as C functions
/// (calling a registered function is a protected call with nothing to
/// allocate, where `Lua::exec_raw` made a closure each time) and the
/// metatable that marks a table as an array there (mlua's, the same for
/// the VM's life).
#[derive(Debug, Clone)]
pub struct Packing {
    unpack: Function,
    pack: Function,
    mark: Table,
}

impl Packing {
    /// The packing of `lua`.
    ///
    /// Fails only when the VM cannot allocate the two functions.
    pub fn new(lua: &Lua) -> mlua::Result<Packing> {
        // SAFETY: both are `extern "C-unwind"` functions that check their
        // arguments' types before reading them.
        unsafe {
            Ok(Packing {
                unpack: lua.create_c_function(unpack::entry)?,
                pack: lua.create_c_function(walk::entry)?,
                mark: lua.array_metatable(),
            })
        }
    }

    /// Builds the Luau value of `data` in `lua`, this packing's VM.
    ///
    /// Fails with a runtime error for bytes that are not one MessagePack
    /// value (a [`Packed`] from the master always is), for MessagePack
    /// extension types, for a map key that Luau cannot index by (nil, NaN),
    /// and for nesting deeper than [`MAX_DEPTH`]; with a memory error when
    /// the VM's heap cap is reached.
    pub fn unpack(&self, lua: &Lua, data: &Packed) -> mlua::Result<Value> {
        if let Some(value) = unpack::scalar(lua, data.as_bytes()) {
            return value;
        }
        let mut call = unpack::Call {
            bytes: data.as_bytes(),
            failed: None,
        };
        let ctx = LightUserData(std::ptr::from_mut(&mut call).cast::<c_void>());
        let value: Value = self.unpack.call((ctx, &self.mark))?;
        match call.failed {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }

    /// The [`Packed`] encoding of `value`, a value of this VM.
    ///
    /// Fails with a [`PackError`] naming what cannot be sent (see the
    /// module's table), when the VM cannot make room on its stack for a
    /// table's entries, or when the encoding passes [`MAX_PACKED_BYTES`].
    pub fn pack(&self, value: &Value) -> Result<Packed, PackError> {
        self.pack_within(value, MAX_PACKED_BYTES)
    }

    /// [`Packing::pack`], refused with [`PackError::TooLarge`] once the
    /// encoding passes `limit` bytes.
    pub fn pack_within(&self, value: &Value, limit: usize) -> Result<Packed, PackError> {
        let mut call = walk::Call {
            out: Vec::with_capacity(64),
            mark: self.mark.to_pointer(),
            limit,
            failed: None,
        };
        let ctx = LightUserData(std::ptr::from_mut(&mut call).cast::<c_void>());
        self.pack
            .call::<()>((ctx, value))
            .map_err(|e| PackError::Unsendable(e.to_string()))?;
        match call.failed {
            Some(e) => Err(e),
            None => Ok(Packed::from_trusted(call.out)),
        }
    }
}

/// Checks with the VM's bounded walk (its [`Packing`], which the VM keeps
/// as app data) that `value` encodes within `limit` bytes, before a host
/// function converts it with mlua's serde, whose copy has no bound (a value
/// referenced many times is copied each time, outside the VM's memory
/// cap). Fails as `{what}: too large: ...` past the limit, and as `{what}:
/// {unsendable}: ...` for what cannot be sent at all.
pub fn check_size(
    lua: &Lua,
    what: &str,
    unsendable: &str,
    value: &Value,
    limit: usize,
) -> mlua::Result<()> {
    pack_checked(lua, what, unsendable, value, limit).map(|_| ())
}

/// [`check_size`], keeping what it packed: for a caller that sends the
/// value on as MessagePack, one walk instead of two.
pub fn pack_checked(
    lua: &Lua,
    what: &str,
    unsendable: &str,
    value: &Value,
    limit: usize,
) -> mlua::Result<Packed> {
    let packing = lua
        .app_data_ref::<Packing>()
        .ok_or_else(|| mlua::Error::runtime(format!("{what}: no packing in this VM")))?
        .clone();
    match packing.pack_within(value, limit) {
        Ok(packed) => Ok(packed),
        Err(e @ PackError::TooLarge(_)) => Err(mlua::Error::runtime(format!(
            "{what}: too large: the value {e}"
        ))),
        Err(e @ PackError::Unsendable(_)) => {
            Err(mlua::Error::runtime(format!("{what}: {unsendable}: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Value;
    use serde_json::json;

    fn round_trip(v: serde_json::Value) -> serde_json::Value {
        let lua = Lua::new();
        let p = Packing::new(&lua).unwrap();
        let luau = p.unpack(&lua, &Packed::from_value(&v)).unwrap();
        p.pack(&luau).unwrap().to_value()
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
            Packing::new(&lua).unwrap().pack(&v)
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
        let e = Packing::new(&lua)
            .unwrap()
            .unpack(&lua, &Packed::from_value(&deep))
            .unwrap_err();
        assert!(e.to_string().contains("deeper than 128"), "{e}");
        // A lying length fails as truncated, without sizing a table by it.
        let lie = Packed::from_trusted(vec![0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(
            Packing::new(&lua)
                .unwrap()
                .unpack(&lua, &lie)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let ext = Packed::from_trusted(vec![0xd4, 0x01, 0x00]);
        assert!(
            Packing::new(&lua)
                .unwrap()
                .unpack(&lua, &ext)
                .unwrap_err()
                .to_string()
                .contains("extension")
        );
        // A NaN key (a float map key can be one) cannot index a table.
        let nan = Packed::from_trusted(vec![0x81, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 0x01]);
        let e = Packing::new(&lua)
            .unwrap()
            .unpack(&lua, &nan)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN"), "{e}");
    }

    #[test]
    fn data_past_the_heap_cap_is_a_memory_error_and_the_vm_goes_on() {
        let lua = Lua::new();
        let big: Vec<String> = (0..20_000).map(|i| format!("entry {i}")).collect();
        let big = Packed::from_value(&json!({"items": big}));
        lua.set_memory_limit(lua.used_memory() + 256 * 1024)
            .unwrap();
        let e = Packing::new(&lua).unwrap().unpack(&lua, &big).unwrap_err();
        assert!(matches!(e, mlua::Error::MemoryError(_)), "{e}");
        lua.set_memory_limit(0).unwrap();
        let v = Packing::new(&lua).unwrap().unpack(&lua, &big).unwrap();
        let back = Packing::new(&lua).unwrap().pack(&v).unwrap();
        assert_eq!(back, big.to_value());
    }

    /// A Luau program that builds a value with shared parts: a leaf string
    /// of `leaf` bytes, then `rounds` tables that each hold the previous
    /// one `fan` times.
    fn shared_value(leaf: usize, rounds: usize, fan: usize) -> String {
        format!(
            "local t = string.rep('x', {leaf}) \
             for _ = 1, {rounds} do local n = {{}} for i = 1, {fan} do n[i] = t end t = n end \
             return t"
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the value and the limit, the walk never writes past the
        /// limit: it packs the value whole when its encoding fits, and
        /// says `TooLarge` when it does not, however often a part repeats.
        #[test]
        fn the_walk_stops_at_its_limit_and_only_there(
            leaf in 0usize..2000,
            rounds in 0usize..12,
            fan in 1usize..5,
            limit in 1usize..200_000,
        ) {
            let lua = Lua::new();
            let p = Packing::new(&lua).unwrap();
            let v: Value = lua.load(shared_value(leaf, rounds, fan)).eval().unwrap();
            // The encoding's true size, from a walk with no bound that
            // counts: small enough here to build.
            let whole = fan.checked_pow(rounds as u32).unwrap_or(usize::MAX);
            let exact = (whole <= 100_000).then(|| p.pack_within(&v, usize::MAX).unwrap().as_bytes().len());
            match p.pack_within(&v, limit) {
                Ok(packed) => {
                    proptest::prop_assert!(packed.as_bytes().len() <= limit);
                    if let Some(exact) = exact {
                        proptest::prop_assert_eq!(packed.as_bytes().len(), exact);
                    }
                }
                Err(PackError::TooLarge(l)) => {
                    proptest::prop_assert_eq!(l, limit);
                    if let Some(exact) = exact {
                        proptest::prop_assert!(exact > limit);
                    }
                }
                Err(e) => proptest::prop_assert!(false, "{e}"),
            }
        }
    }
}
