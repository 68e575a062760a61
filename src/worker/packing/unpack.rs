//! Event data into Luau values: one walk over the MessagePack bytes,
//! building each table and string through mlua.

use super::MAX_DEPTH;
use crate::mesophyll::message::Packed;
use mlua::{Lua, LuaSerdeExt, Table, Value};

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
