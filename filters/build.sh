#!/usr/bin/env bash
# Builds the example filters and copies them to filters/dist/<name>.wasm,
# where `meshplay serve` loads them from: the ABI v1 filters for
# wasm32-unknown-unknown, the proxy-wasm ones (their own workspace, on the
# public proxy-wasm SDK) for wasm32-wasip1.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-unknown-unknown wasm32-wasip1 >/dev/null 2>&1 || true
# Each workspace's own target folder, whatever CARGO_TARGET_DIR says: the
# copies below read from there.
cargo build --release --target wasm32-unknown-unknown --locked --target-dir target
(cd proxy-wasm && cargo build --release --target wasm32-wasip1 --locked --target-dir target)
mkdir -p dist
for name in redact keyword-block require-fields; do
  cp "target/wasm32-unknown-unknown/release/${name//-/_}.wasm" "dist/$name.wasm"
done
for name in proxy-stamp proxy-deny; do
  cp "proxy-wasm/target/wasm32-wasip1/release/${name//-/_}.wasm" "dist/$name.wasm"
done
ls -l dist
