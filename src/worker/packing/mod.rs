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
//!
//! Both work on the VM's stack through Luau's C API, each in one protected
//! call (`unpack.rs`, `walk.rs`): through mlua's API every key, value and
//! table was a lock, a reference slot and often a protected call of its
//! own, which made packing a fifth of a worker's time.

mod unpack;
mod walk;

use mlua::{Lua, LuaSerdeExt};

pub use unpack::unpack;
pub use walk::pack;

/// How deep tables may nest, either way (mlua's own limit).
pub const MAX_DEPTH: usize = 128;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesophyll::message::Packed;
    use mlua::Value;
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
        // A NaN key (a float map key can be one) cannot index a table.
        let nan = Packed::from_trusted(vec![0x81, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 0x01]);
        let e = unpack(&lua, &nan).unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
    }

    #[test]
    fn data_past_the_heap_cap_is_a_memory_error_and_the_vm_goes_on() {
        let lua = Lua::new();
        let big: Vec<String> = (0..20_000).map(|i| format!("entry {i}")).collect();
        let big = Packed::from_value(&json!({"items": big}));
        lua.set_memory_limit(lua.used_memory() + 256 * 1024)
            .unwrap();
        let e = unpack(&lua, &big).unwrap_err();
        assert!(matches!(e, mlua::Error::MemoryError(_)), "{e}");
        lua.set_memory_limit(0).unwrap();
        let v = unpack(&lua, &big).unwrap();
        let back = pack(&lua, ArrayMark::of(&lua), &v).unwrap();
        assert_eq!(back, big.to_value());
    }
}
