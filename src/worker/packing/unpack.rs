//! Event data into Luau values: one walk over the MessagePack bytes,
//! pushing each value on the VM's stack through Luau's C API, inside one
//! call of a C function (through mlua, every table, string and field set
//! was a protected call of its own, since the VM's heap is capped).

use super::MAX_DEPTH;
use mlua::{Lua, Value, ffi};
use std::ffi::c_int;

/// What one unpacking reads and where it says why it failed; the entry
/// gets it as a light userdata.
pub(super) struct Call<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) failed: Option<mlua::Error>,
}

/// The C function [`super::Packing::unpack`] calls, with its [`Call`] at
/// index 1 and the array mark at [`ARRAY_MARK`]: leaves the value built.
///
/// # Safety
///
/// Called by Luau as a C function, with those two arguments.
pub(super) unsafe extern "C-unwind" fn entry(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: the caller passes a live `Call` as a light userdata, and the
    // reader makes room before every push and leaves exactly one value (an
    // allocation that fails raises, out of this call, as a memory error).
    unsafe {
        let call = ffi::lua_touserdata(state, 1).cast::<Call<'_>>();
        if call.is_null() || ffi::lua_type(state, ARRAY_MARK) != ffi::LUA_TTABLE {
            return 0;
        }
        let call = &mut *call;
        let mut reader = Reader {
            state,
            bytes: call.bytes,
        };
        match reader.value(0) {
            Ok(()) => 1,
            Err(e) => {
                call.failed = Some(e);
                0
            }
        }
    }
}

/// Data that is one number, boolean, nil or string, built without the
/// protected call a table needs (a string is one allocation, which mlua
/// protects itself); `None` for anything else.
pub(super) fn scalar(lua: &Lua, bytes: &[u8]) -> Option<mlua::Result<Value>> {
    let marker = *bytes.first()?;
    let be = |n: usize| -> Option<u64> {
        let b = bytes.get(1..1 + n)?;
        Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    };
    let number = |n: f64| Some(Ok(Value::Number(n)));
    let string = |head: usize, len: Option<u64>| {
        let len = usize::try_from(len?).ok()?;
        let text = bytes.get(head..head.checked_add(len)?)?;
        Some(lua.create_string(text).map(Value::String))
    };
    match marker {
        0x00..=0x7f => number(f64::from(marker)),
        0xe0..=0xff => number(f64::from(marker as i8)),
        0xc0 => Some(Ok(Value::Nil)),
        0xc2 => Some(Ok(Value::Boolean(false))),
        0xc3 => Some(Ok(Value::Boolean(true))),
        0xcb => number(f64::from_bits(be(8)?)),
        0xa0..=0xbf => string(1, Some(u64::from(marker & 0x1f))),
        0xd9 | 0xc4 => string(2, be(1)),
        0xda | 0xc5 => string(3, be(2)),
        0xdb | 0xc6 => string(5, be(4)),
        // Other numbers, containers, and whatever is malformed: the reader.
        _ => None,
    }
}

/// Where the array mark sits in [`entry`]'s frame.
const ARRAY_MARK: c_int = 2;

/// Integers go to Luau as numbers, as mlua pushes them.
fn push_number(state: *mut ffi::lua_State, n: f64) {
    // SAFETY: called by the reader after making room.
    unsafe { ffi::lua_pushnumber(state, n) };
}

struct Reader<'a> {
    state: *mut ffi::lua_State,
    bytes: &'a [u8],
}

fn malformed(what: &str) -> mlua::Error {
    mlua::Error::runtime(format!("event data is not MessagePack: {what}"))
}

// SAFETY (every block below): `state` is the one `exec_raw` gave, room for
// each push was made by `room`, and the indices used are the frame's own.
impl<'a> Reader<'a> {
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

    fn room(&self) -> mlua::Result<()> {
        if unsafe { ffi::lua_checkstack(self.state, 2) } == 0 {
            return Err(mlua::Error::runtime(
                "event data nests too deep for the VM's stack",
            ));
        }
        Ok(())
    }

    /// Reads one value and pushes it.
    fn value(&mut self, depth: usize) -> mlua::Result<()> {
        self.room()?;
        let state = self.state;
        let marker = self.take(1)?[0];
        match marker {
            0x00..=0x7f => push_number(state, f64::from(marker)),
            0xe0..=0xff => push_number(state, f64::from(marker as i8)),
            0xc0 => unsafe { ffi::lua_pushnil(state) },
            0xc2 => unsafe { ffi::lua_pushboolean(state, 0) },
            0xc3 => unsafe { ffi::lua_pushboolean(state, 1) },
            0xcc => push_number(state, self.uint(1)? as f64),
            0xcd => push_number(state, self.uint(2)? as f64),
            0xce => push_number(state, self.uint(4)? as f64),
            0xcf => push_number(state, self.uint(8)? as f64),
            0xd0 => push_number(state, f64::from(self.uint(1)? as u8 as i8)),
            0xd1 => push_number(state, f64::from(self.uint(2)? as u16 as i16)),
            0xd2 => push_number(state, f64::from(self.uint(4)? as u32 as i32)),
            0xd3 => push_number(state, self.uint(8)? as i64 as f64),
            0xca => push_number(state, f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => push_number(state, f64::from_bits(self.uint(8)?)),
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
        }
        Ok(())
    }

    fn string(&mut self, n: usize) -> mlua::Result<()> {
        let bytes = self.take(n)?;
        unsafe { ffi::lua_pushlstring(self.state, bytes.as_ptr().cast(), bytes.len()) };
        Ok(())
    }

    fn nested(depth: usize) -> mlua::Result<usize> {
        if depth >= MAX_DEPTH {
            return Err(mlua::Error::runtime(format!(
                "event data nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(depth + 1)
    }

    /// Every element takes at least a byte: a length beyond what is left
    /// is a lie, and must not size the table.
    fn size_hint(&self, n: usize, per_entry: usize) -> c_int {
        c_int::try_from(n.min(self.bytes.len() / per_entry)).unwrap_or(c_int::MAX)
    }

    fn array(&mut self, n: usize, depth: usize) -> mlua::Result<()> {
        let depth = Self::nested(depth)?;
        let state = self.state;
        unsafe {
            ffi::lua_createtable(state, self.size_hint(n, 1), 0);
            ffi::lua_pushvalue(state, ARRAY_MARK);
            ffi::lua_setmetatable(state, -2);
        }
        for i in 1..=n {
            self.value(depth)?;
            unsafe {
                if ffi::lua_type(state, -1) == ffi::LUA_TNIL {
                    ffi::lua_pop(state, 1);
                } else {
                    ffi::lua_rawseti(state, -2, i as ffi::lua_Integer);
                }
            }
        }
        Ok(())
    }

    fn map(&mut self, n: usize, depth: usize) -> mlua::Result<()> {
        let depth = Self::nested(depth)?;
        let state = self.state;
        unsafe { ffi::lua_createtable(state, 0, self.size_hint(n, 2)) };
        for _ in 0..n {
            self.value(depth)?;
            let key = unsafe { ffi::lua_type(state, -1) };
            if key == ffi::LUA_TNIL {
                return Err(malformed("a map key is nil"));
            }
            if key == ffi::LUA_TNUMBER && unsafe { ffi::lua_tonumber(state, -1) }.is_nan() {
                return Err(malformed("a map key is NaN"));
            }
            self.value(depth)?;
            unsafe {
                if ffi::lua_type(state, -1) == ffi::LUA_TNIL {
                    ffi::lua_pop(state, 2);
                } else {
                    ffi::lua_rawset(state, -3);
                }
            }
        }
        Ok(())
    }
}
