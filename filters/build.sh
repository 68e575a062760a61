#!/usr/bin/env bash
# Builds the example filters for wasm32-unknown-unknown and copies them to
# filters/dist/<name>.wasm, where `meshplay serve` loads them from.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo build --release --target wasm32-unknown-unknown --locked
mkdir -p dist
for name in redact keyword-block require-fields; do
  cp "target/wasm32-unknown-unknown/release/${name//-/_}.wasm" "dist/$name.wasm"
done
ls -l dist
