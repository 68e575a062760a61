//! A handler's result into MessagePack: one walk over the value on the
//! VM's stack, through Luau's C API.

use super::{MAX_DEPTH, PackError};
use mlua::ffi;
use std::ffi::{c_int, c_void};

/// What one packing writes to and where it says why it failed; the entry
/// gets it as a light userdata.
pub(super) struct Call {
    pub(super) out: Vec<u8>,
    /// The VM's array mark.
    pub(super) mark: *const c_void,
    /// The most bytes `out` may reach.
    pub(super) limit: usize,
    pub(super) failed: Option<PackError>,
}

/// The C function [`super::Packing::pack`] calls, with its [`Call`] at
/// index 1 and the value at index 2; returns nothing.
///
/// # Safety
///
/// Called by Luau as a C function, with those two arguments.
pub(super) unsafe extern "C-unwind" fn entry(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: the caller passes a live `Call` as a light userdata; the
    // walk only reads values and pushes entries of tables it is reading,
    // after `lua_checkstack` made room.
    unsafe {
        let call = ffi::lua_touserdata(state, 1).cast::<Call>();
        if call.is_null() {
            return 0;
        }
        let call = &mut *call;
        let mut walk = Walk {
            state,
            out: &mut call.out,
            limit: call.limit,
            array: call.mark,
            ancestors: Vec::new(),
        };
        if let Err(e) = walk.value(2) {
            call.failed = Some(e);
        }
        0
    }
}

/// One packing in progress, on the VM's stack.
struct Walk<'o> {
    state: *mut ffi::lua_State,
    out: &'o mut Vec<u8>,
    /// Checked before every value is written and before every string is
    /// copied, so the walk ends as soon as the output passes it.
    limit: usize,
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
            return Err(PackError::Unsendable(
                "a table too large for the VM's stack cannot be sent".into(),
            ));
        }
        Ok(())
    }

    /// Fails once `more` bytes would take the output past its limit.
    fn fits(&self, more: usize) -> Result<(), PackError> {
        if self.out.len().saturating_add(more) > self.limit {
            return Err(PackError::TooLarge(self.limit));
        }
        Ok(())
    }

    fn value(&mut self, idx: c_int) -> Result<(), PackError> {
        // Every value writes at least a byte: a walk over a huge border
        // (nil after nil) ends here too.
        self.fits(1)?;
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
                let s = std::str::from_utf8(unsafe { string_at(state, idx) }).map_err(|_| {
                    PackError::Unsendable("a string that is not UTF-8 cannot be sent".into())
                })?;
                self.fits(s.len() + 5)?;
                let _ = rmp::encode::write_str(self.out, s);
            }
            ffi::LUA_TBUFFER => {
                let mut len = 0usize;
                let bytes = unsafe {
                    let p = ffi::lua_tobuffer(state, idx, &mut len);
                    std::slice::from_raw_parts(p.cast::<u8>(), len)
                };
                self.fits(bytes.len() + 5)?;
                let _ = rmp::encode::write_bin(self.out, bytes);
            }
            ffi::LUA_TTABLE => self.table(idx)?,
            other => {
                return Err(PackError::Unsendable(format!(
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
            return Err(PackError::Unsendable(
                "a table that contains itself cannot be sent".into(),
            ));
        }
        if self.ancestors.len() >= MAX_DEPTH {
            return Err(PackError::Unsendable(format!(
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
                        return Err(PackError::Unsendable(
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
                    return Err(PackError::Unsendable(format!(
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
            self.fits(k.len() + 5)?;
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
