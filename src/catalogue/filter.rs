//! A WebAssembly module checked against the filter ABIs Meshplay runs, and
//! the hash a module is known by.
//!
//! Two ABIs, told apart by their marker export ([`Abi`]):
//!
//! - Meshplay's ABI v1 (described for authors in `filters/README.md`): a
//!   module exports `memory`, the marker `meshplay_abi_v1`,
//!   `meshplay_alloc(len) -> ptr` and `meshplay_filter(ptr, len) -> i64`,
//!   may import `meshplay.log(level, ptr, len)` and `meshplay.now_ms() ->
//!   i64`, and nothing else (no WASI);
//! - proxy-wasm ABI 0.2.1, unchanged Envoy HTTP filters: the marker
//!   `proxy_abi_version_0_2_1`, checked by [`super::proxy_abi`].
//!
//! [`check_module`] is what both sides run: the master on a plain engine
//! through [`ModuleChecker`] (no pooling allocator, no epoch thread: it
//! never runs a filter), a worker on its own engine before it keeps the
//! module. Errors are one line, fit for an API answer.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
#[cfg(feature = "server")]
use wasmtime::{Engine, ExternType, Module, ValType};

#[cfg(feature = "server")]
/// Why a module is not a filter this host can run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModuleError {
    /// The bytes are not a WebAssembly module wasmtime accepts.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// A valid module that does not follow the filter ABI.
    #[error("not a Meshplay filter (ABI v1): {0}")]
    Abi(String),
    /// A module that carries the proxy-wasm 0.2.1 marker but breaks that ABI
    /// (or asks for what the host does not give, such as files).
    #[error("not a proxy-wasm filter (ABI 0.2.1): {0}")]
    ProxyAbi(String),
}

/// The ABI a filter module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Abi {
    /// Meshplay's own: one call, MessagePack in, a verdict out.
    #[serde(rename = "meshplay-v1")]
    MeshplayV1,
    /// proxy-wasm 0.2.1: the event presented as an HTTP request.
    #[serde(rename = "proxy-wasm-0.2.1")]
    ProxyWasm,
}

impl std::fmt::Display for Abi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Abi::MeshplayV1 => "meshplay-v1",
            Abi::ProxyWasm => "proxy-wasm-0.2.1",
        })
    }
}

#[cfg(feature = "server")]
/// Checks uploads without running them: a plain wasmtime engine that only
/// compiles. Cheap to clone.
#[derive(Clone, Default)]
pub struct ModuleChecker {
    engine: Engine,
}

#[cfg(feature = "server")]
impl ModuleChecker {
    /// Checks that `bytes` are a filter this host can run, and says which
    /// ABI it speaks.
    ///
    /// Compiling takes milliseconds to seconds for a large module: call it
    /// off the async threads.
    pub fn check(&self, bytes: &[u8]) -> Result<Abi, ModuleError> {
        check_module(&parse(&self.engine, bytes)?)
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(feature = "server")]
/// Compiles `bytes`, with an error fit for one line of an API answer.
pub fn parse(engine: &Engine, bytes: &[u8]) -> Result<Module, ModuleError> {
    if !bytes.starts_with(b"\0asm") {
        let what = if bytes.trim_ascii_start().starts_with(b"(module") {
            "WebAssembly text (.wat); compile it to a binary .wasm first"
        } else {
            "the file does not start with the WebAssembly magic bytes \\0asm"
        };
        return Err(ModuleError::Invalid(what.into()));
    }
    Module::from_binary(engine, bytes).map_err(|e| {
        // wasmtime's messages may span lines (debug-printed byte arrays).
        let message = format!("{e:#}");
        ModuleError::Invalid(message.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

#[cfg(feature = "server")]
/// Checks the module's imports and exports against the ABI its marker
/// names (ABI v1 when it carries no proxy-wasm marker), and returns it.
pub fn check_module(module: &Module) -> Result<Abi, ModuleError> {
    if module.get_export(super::proxy_abi::MARKER).is_some() {
        super::proxy_abi::check(module)?;
        return Ok(Abi::ProxyWasm);
    }
    check_v1(module)?;
    Ok(Abi::MeshplayV1)
}

#[cfg(feature = "server")]
fn check_v1(module: &Module) -> Result<(), ModuleError> {
    for import in module.imports() {
        let allowed = match (import.module(), import.name(), import.ty()) {
            ("meshplay", "log", ExternType::Func(f)) => {
                f.params().map(|p| p.to_string()).collect::<Vec<_>>() == ["i32", "i32", "i32"]
                    && f.results().len() == 0
            }
            ("meshplay", "now_ms", ExternType::Func(f)) => {
                f.params().len() == 0
                    && f.results().map(|r| r.to_string()).collect::<Vec<_>>() == ["i64"]
            }
            _ => false,
        };
        if !allowed {
            return Err(ModuleError::Abi(format!(
                "imports `{}::{}`, which the host does not provide (only meshplay::log and meshplay::now_ms; no WASI)",
                import.module(),
                import.name()
            )));
        }
    }
    let func = |name: &str, params: &[ValType], results: &[ValType]| -> Result<(), ModuleError> {
        match module.get_export(name) {
            Some(ExternType::Func(f))
                if f.params()
                    .map(|p| p.to_string())
                    .eq(params.iter().map(|p| p.to_string()))
                    && f.results()
                        .map(|r| r.to_string())
                        .eq(results.iter().map(|r| r.to_string())) =>
            {
                Ok(())
            }
            Some(_) => Err(ModuleError::Abi(format!(
                "export `{name}` has the wrong type"
            ))),
            None => Err(ModuleError::Abi(format!("no export `{name}`"))),
        }
    };
    func("meshplay_abi_v1", &[], &[])?;
    func("meshplay_alloc", &[ValType::I32], &[ValType::I32])?;
    func(
        "meshplay_filter",
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
    )?;
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => Ok(()),
        _ => Err(ModuleError::Abi("no exported `memory`".into())),
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;
    use crate::fixtures::{dist, fixture};

    #[test]
    fn modules_that_are_not_filters_are_refused_with_the_reason() {
        let c = ModuleChecker::default();
        let err = c.check(&fixture("unknown-import.wat")).unwrap_err();
        assert!(err.to_string().contains("env::launch_missiles"), "{err}");
        let err = c.check(&fixture("not-wasm.wasm")).unwrap_err();
        assert!(matches!(err, ModuleError::Invalid(_)), "{err}");
        let err = c.check(&fixture("no-abi-marker.wat")).unwrap_err();
        assert!(err.to_string().contains("meshplay_abi_v1"), "{err}");
        let text = b"  (module (memory 1))".to_vec();
        let err = c.check(&text).unwrap_err();
        assert!(err.to_string().contains(".wat"), "{err}");
        // Valid magic, broken body: wasmtime's reason, on one line.
        let err = c.check(b"\0asm\x01\0\0\0\x01\xff").unwrap_err();
        assert!(matches!(err, ModuleError::Invalid(_)), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn the_shipped_filters_pass() {
        for name in ["redact", "keyword-block", "require-fields"] {
            ModuleChecker::default().check(&dist(name)).unwrap();
        }
        assert_eq!(sha256_hex(b"").len(), 64);
    }
}
