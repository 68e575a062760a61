//! The host's small standard library for code that talks to APIs: `json`,
//! `base64` and `crypto`, each a well-kept crate behind a bounded call.
//!
//! ```lua
//! local body = json.encode({ text = "hi" })          -- a string
//! local data = json.decode(res.body)                 -- a table (null is nil)
//! local sig = crypto.hmac_sha256(secret, body)       -- hex; "raw" for bytes
//! local id = crypto.random_bytes(16, "hex")
//! local auth = "Basic " .. base64.encode(user .. ":" .. pass)
//! ```
//!
//! Every call raises a plain error naming itself on bad input
//! (`json.decode: expected value at line 1 column 1`). What a call builds
//! is bounded: `json.encode` measures its value first (as `kv.set` does),
//! `json.decode` and the decoders take at most [`MAX_INPUT_BYTES`], and
//! `crypto.random_bytes` at most [`MAX_RANDOM_BYTES`]; the VM's heap cap
//! bounds the rest.

use crate::worker::packing::{MAX_PACKED_BYTES, check_size};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use mlua::{Lua, LuaSerdeExt, Table, Value};
use sha2::{Digest, Sha256};

/// The longest string `json.decode` and `base64.decode` take.
pub const MAX_INPUT_BYTES: usize = MAX_PACKED_BYTES;

/// The most bytes one `crypto.random_bytes` call makes.
pub const MAX_RANDOM_BYTES: usize = 1024;

/// Installs `json`, `base64` and `crypto` into `globals`.
pub fn install(lua: &Lua, globals: &Table) -> mlua::Result<()> {
    globals.set("json", json_table(lua)?)?;
    globals.set("base64", base64_table(lua)?)?;
    globals.set("crypto", crypto_table(lua)?)?;
    Ok(())
}

fn error(what: &str, e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(format!("{what}: {e}"))
}

fn too_long(what: &str, len: usize) -> mlua::Result<()> {
    if len > MAX_INPUT_BYTES {
        return Err(error(
            what,
            format!("too large: {len} bytes; the limit is {MAX_INPUT_BYTES}"),
        ));
    }
    Ok(())
}

fn json_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "encode",
        lua.create_function(|lua, value: Value| {
            let what = "json.encode";
            check_size(
                lua,
                what,
                "the value cannot be encoded",
                &value,
                MAX_PACKED_BYTES,
            )?;
            let json: serde_json::Value = lua.from_value(value).map_err(|e| error(what, e))?;
            Ok(json.to_string())
        })?,
    )?;
    t.set(
        "decode",
        lua.create_function(|lua, text: mlua::LuaString| {
            let what = "json.decode";
            let bytes = text.as_bytes();
            too_long(what, bytes.len())?;
            let json: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| error(what, e))?;
            lua.to_value_with(
                &json,
                mlua::serde::SerializeOptions::new()
                    .serialize_none_to_null(false)
                    .serialize_unit_to_null(false),
            )
        })?,
    )?;
    t.set_readonly(true);
    Ok(t)
}

/// `"hex"` (the default) or `"raw"`.
fn output(lua: &Lua, what: &str, bytes: &[u8], form: Option<String>) -> mlua::Result<Value> {
    match form.as_deref() {
        None | Some("hex") => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Ok(Value::String(lua.create_string(hex)?))
        }
        Some("raw") => Ok(Value::String(lua.create_string(bytes)?)),
        Some(other) => Err(error(
            what,
            format!("the form is \"hex\" or \"raw\", not {other:?}"),
        )),
    }
}

fn crypto_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "sha256",
        lua.create_function(|lua, (data, form): (mlua::LuaString, Option<String>)| {
            let digest = Sha256::digest(&data.as_bytes()[..]);
            output(lua, "crypto.sha256", &digest, form)
        })?,
    )?;
    t.set(
        "hmac_sha256",
        lua.create_function(
            |lua, (key, data, form): (mlua::LuaString, mlua::LuaString, Option<String>)| {
                let what = "crypto.hmac_sha256";
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.as_bytes())
                    .map_err(|e| error(what, e))?;
                mac.update(&data.as_bytes());
                output(lua, what, &mac.finalize().into_bytes(), form)
            },
        )?,
    )?;
    t.set(
        "random_bytes",
        lua.create_function(|lua, (n, form): (usize, Option<String>)| {
            let what = "crypto.random_bytes";
            if n > MAX_RANDOM_BYTES {
                return Err(error(
                    what,
                    format!("at most {MAX_RANDOM_BYTES} bytes a call, not {n}"),
                ));
            }
            let mut bytes = vec![0u8; n];
            rand::fill(&mut bytes[..]);
            output(
                lua,
                what,
                &bytes,
                Some(form.unwrap_or_else(|| "raw".into())),
            )
        })?,
    )?;
    t.set_readonly(true);
    Ok(t)
}

/// `"standard"` (the default, padded) or `"url"` (URL-safe, unpadded).
fn engine(
    what: &str,
    alphabet: Option<String>,
) -> mlua::Result<&'static base64::engine::GeneralPurpose> {
    match alphabet.as_deref() {
        None | Some("standard") => Ok(&STANDARD),
        Some("url") => Ok(&URL_SAFE_NO_PAD),
        Some(other) => Err(error(
            what,
            format!("the alphabet is \"standard\" or \"url\", not {other:?}"),
        )),
    }
}

fn base64_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "encode",
        lua.create_function(|_, (data, alphabet): (mlua::LuaString, Option<String>)| {
            let engine = engine("base64.encode", alphabet)?;
            Ok(engine.encode(&data.as_bytes()[..]))
        })?,
    )?;
    t.set(
        "decode",
        lua.create_function(|lua, (text, alphabet): (mlua::LuaString, Option<String>)| {
            let what = "base64.decode";
            let engine = engine(what, alphabet)?;
            let bytes = text.as_bytes();
            too_long(what, bytes.len())?;
            let decoded = engine.decode(&bytes[..]).map_err(|e| error(what, e))?;
            lua.create_string(decoded)
        })?,
    )?;
    t.set_readonly(true);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua() -> Lua {
        let lua = Lua::new();
        lua.set_app_data(crate::worker::packing::Packing::new(&lua).unwrap());
        install(&lua, &lua.globals()).unwrap();
        lua
    }

    fn eval<T: mlua::FromLuaMulti>(lua: &Lua, code: &str) -> mlua::Result<T> {
        lua.load(code).eval()
    }

    #[test]
    fn json_goes_there_and_back() {
        let lua = lua();
        let s: String = eval(&lua, "return json.encode({ a = 1, b = { 'x', true } })").unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&s).unwrap(),
            serde_json::json!({"a": 1, "b": ["x", true]})
        );
        let n: i64 = eval(
            &lua,
            r#"return json.decode('{"a": {"b": [1, 2, 42]}}').a.b[3]"#,
        )
        .unwrap();
        assert_eq!(n, 42);
        let e = eval::<Value>(&lua, "return json.decode('{nope')").unwrap_err();
        assert!(
            e.to_string().contains("json.decode: key must be a string"),
            "{e}"
        );
        let e = eval::<Value>(&lua, "return json.encode({ f = print })").unwrap_err();
        assert!(e.to_string().contains("json.encode"), "{e}");
        let e = eval::<Value>(
            &lua,
            "local t = {} for i = 1, 40 do t = { t, t } end return json.encode(t)",
        )
        .unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn digests_and_macs_match_their_published_vectors() {
        let lua = lua();
        let h: String = eval(&lua, "return crypto.sha256('abc')").unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231, test case 2.
        let m: String = eval(
            &lua,
            "return crypto.hmac_sha256('Jefe', 'what do ya want for nothing?')",
        )
        .unwrap();
        assert_eq!(
            m,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let raw: mlua::LuaString = eval(&lua, "return crypto.sha256('abc', 'raw')").unwrap();
        assert_eq!(raw.as_bytes().len(), 32);
        let (a, b): (String, String) = eval(
            &lua,
            "return crypto.random_bytes(16, 'hex'), crypto.random_bytes(16, 'hex')",
        )
        .unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(eval::<Value>(&lua, "return crypto.random_bytes(1025)").is_err());
        assert!(eval::<Value>(&lua, "return crypto.sha256('x', 'b64')").is_err());
    }

    #[test]
    fn base64_in_both_alphabets() {
        let lua = lua();
        let (s, u): (String, String) = eval(
            &lua,
            "return base64.encode('\\255\\254hi'), base64.encode('\\255\\254hi', 'url')",
        )
        .unwrap();
        assert_eq!((s.as_str(), u.as_str()), ("//5oaQ==", "__5oaQ"));
        let back: String = eval(&lua, "return base64.decode('aGVsbG8=')").unwrap();
        assert_eq!(back, "hello");
        let e = eval::<Value>(&lua, "return base64.decode('***')").unwrap_err();
        assert!(e.to_string().contains("base64.decode"), "{e}");
    }
}
