//! The Meshplay filter SDK: write a filter as one function from [`Input`] to
//! [`Verdict`]; [`filter!`] turns it into a WebAssembly module that speaks
//! the host's ABI (version 1, described in `filters/README.md`).
//!
//! ```
//! use meshplay_filter_sdk::{Input, Verdict, filter};
//!
//! fn no_shouting(input: &Input) -> Verdict {
//!     match input.event.data.as_str() {
//!         Some(text) if text.len() > 3 && text == text.to_uppercase() => {
//!             Verdict::reject("please do not shout")
//!         }
//!         _ => Verdict::keep(),
//!     }
//! }
//!
//! filter!(no_shouting);
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown`; the
//! `.wasm` goes in the master's `--filters` folder or is uploaded with
//! `meshplay filters push`. On the host target the same code builds as a
//! normal library, so filters are unit-tested with plain `cargo test`.

use serde::{Deserialize, Serialize};
pub use serde_json::{Value, json};

#[cfg(all(target_arch = "wasm32", feature = "bump"))]
pub mod bump;

#[cfg(all(target_arch = "wasm32", feature = "bump"))]
#[global_allocator]
static ALLOCATOR: bump::Bump = bump::Bump::new();

/// The ABI version this SDK speaks; its marker export is
/// `meshplay_abi_v1`.
pub const ABI_VERSION: u32 = 1;

/// Who the event is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// The tenant's type (`user`, `guild`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: String,
}

/// An event: a name and free-form data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// Its payload.
    #[serde(default)]
    pub data: Value,
}

/// What a filter is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// Whose event it is.
    pub tenant: Tenant,
    /// The event.
    pub event: Event,
    /// This filter's configuration, from the plugin manifest (or the
    /// script's `filters.run` call); `null` when none.
    #[serde(default)]
    pub config: Value,
}

/// What a filter decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Let the event through: unchanged (`event: None`) or rewritten.
    Continue {
        /// The rewritten event, if the filter changed it.
        #[serde(default)]
        event: Option<Event>,
    },
    /// Stop the event, with a reason for the caller.
    Reject {
        /// Why.
        reason: String,
    },
    /// The filter could not do its job (bad configuration, undecodable
    /// input). The host treats it as a filter error.
    Error {
        /// What went wrong.
        message: String,
    },
}

impl Verdict {
    /// Let the event through unchanged.
    pub fn keep() -> Self {
        Verdict::Continue { event: None }
    }

    /// Let a rewritten event through.
    pub fn rewrite(event: Event) -> Self {
        Verdict::Continue { event: Some(event) }
    }

    /// Stop the event.
    pub fn reject(reason: impl Into<String>) -> Self {
        Verdict::Reject {
            reason: reason.into(),
        }
    }

    /// Report a failure of the filter itself.
    pub fn error(message: impl Into<String>) -> Self {
        Verdict::Error {
            message: message.into(),
        }
    }
}

/// Host functions: logging and the clock. On the host target (unit tests)
/// they print to stderr and read the system clock.
pub mod host {
    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "meshplay")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn host_log(level: i32, ptr: i32, len: i32);
        #[link_name = "now_ms"]
        fn host_now_ms() -> i64;
    }

    /// Log levels, as the host's `log` takes them.
    #[derive(Debug, Clone, Copy)]
    pub enum Level {
        /// Debugging detail.
        Debug = 0,
        /// Normal operation.
        Info = 1,
        /// Something odd.
        Warn = 2,
        /// Something wrong.
        Error = 3,
    }

    /// Writes one line to the worker's log (tagged with the filter's name).
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: the host reads `len` bytes at `ptr` from our memory.
        unsafe {
            host_log(level as i32, message.as_ptr() as i32, message.len() as i32)
        };
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("[{level:?}] {message}");
    }

    /// Unix time in milliseconds.
    pub fn now_ms() -> i64 {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: a plain host call without pointers.
        return unsafe { host_now_ms() };
        #[cfg(not(target_arch = "wasm32"))]
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Calls a filter on encoded input and encodes its verdict: the whole ABI
/// minus memory handling, so it can be tested on the host.
pub fn run_encoded(input: &[u8], f: fn(&Input) -> Verdict) -> Vec<u8> {
    let verdict = match rmp_serde::from_slice::<Input>(input) {
        Ok(input) => f(&input),
        Err(e) => Verdict::error(format!("undecodable input: {e}")),
    };
    rmp_serde::to_vec_named(&verdict).unwrap_or_else(|e| {
        rmp_serde::to_vec_named(&Verdict::error(format!("unencodable verdict: {e}")))
            .expect("a short error encodes")
    })
}

/// Allocates `len` bytes for the host to write the input into. The instance
/// lives for one call, so nothing is ever freed.
#[doc(hidden)]
pub fn alloc(len: i32) -> i32 {
    let mut buf = Vec::<u8>::with_capacity(len.max(0) as usize);
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr as i32
}

/// Runs `f` on the input at `ptr..ptr+len`; returns the verdict's address
/// and length packed as `(ptr << 32) | len`.
///
/// # Safety
/// `ptr` and `len` must describe memory the host wrote through [`alloc`].
#[doc(hidden)]
pub unsafe fn call(ptr: i32, len: i32, f: fn(&Input) -> Verdict) -> i64 {
    // SAFETY: the caller guarantees the range is ours and initialised.
    let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
    let out = run_encoded(input, f);
    let (out_ptr, out_len) = (out.as_ptr() as i64, out.len() as i64);
    std::mem::forget(out);
    (out_ptr << 32) | out_len
}

/// Exports `f` as this module's filter, with the ABI's marker and allocator.
#[macro_export]
macro_rules! filter {
    ($f:path) => {
        // On the host the exports are not generated; this keeps the filter
        // function "used" and checks its signature there too.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn(&$crate::Input) -> $crate::Verdict = $f;

        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn meshplay_abi_v1() {}

        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn meshplay_alloc(len: i32) -> i32 {
            $crate::alloc(len)
        }

        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn meshplay_filter(ptr: i32, len: i32) -> i64 {
            // SAFETY: the host passes back what it wrote via meshplay_alloc.
            unsafe { $crate::call(ptr, len, $f) }
        }
    };
}

/// Applies `f` to every string inside `v`, depth first (object keys are
/// left alone). Filters that scrub or inspect text start here.
pub fn map_strings(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|i| map_strings(i, f)),
        Value::Object(map) => map.values_mut().for_each(|i| map_strings(i, f)),
        _ => {}
    }
}

/// Calls `f` on every string inside `v` until it returns `Some`.
pub fn find_string<T>(v: &Value, f: &mut dyn FnMut(&str) -> Option<T>) -> Option<T> {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().find_map(|i| find_string(i, f)),
        Value::Object(map) => map.values().find_map(|i| find_string(i, f)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(data: Value) -> Vec<u8> {
        rmp_serde::to_vec_named(&Input {
            tenant: Tenant {
                kind: "user".into(),
                id: "1".into(),
            },
            event: Event {
                name: "e".into(),
                data,
            },
            config: Value::Null,
        })
        .unwrap()
    }

    fn upper(i: &Input) -> Verdict {
        let mut e = i.event.clone();
        map_strings(&mut e.data, &mut |s| *s = s.to_uppercase());
        Verdict::rewrite(e)
    }

    #[test]
    fn verdicts_have_the_documented_shape() {
        let v: Value = serde_json::to_value(Verdict::reject("no")).unwrap();
        assert_eq!(v, json!({"verdict": "reject", "reason": "no"}));
        let v: Value = serde_json::to_value(Verdict::keep()).unwrap();
        assert_eq!(v, json!({"verdict": "continue", "event": null}));
    }

    #[test]
    fn run_encoded_decodes_calls_and_encodes() {
        let out = run_encoded(&input(json!({"a": ["x", 1]})), upper);
        let v: Verdict = rmp_serde::from_slice(&out).unwrap();
        match v {
            Verdict::Continue { event: Some(e) } => assert_eq!(e.data, json!({"a": ["X", 1]})),
            other => panic!("{other:?}"),
        }
        let out = run_encoded(b"\xc1garbage", upper);
        assert!(matches!(
            rmp_serde::from_slice(&out).unwrap(),
            Verdict::Error { .. }
        ));
    }

    #[test]
    fn find_string_stops_at_the_first_hit() {
        let v = json!({"a": ["x", {"b": "needle"}], "c": "other"});
        let hit = find_string(&v, &mut |s| s.contains("needle").then(|| s.to_owned()));
        assert_eq!(hit.as_deref(), Some("needle"));
    }
}
