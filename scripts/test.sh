#!/usr/bin/env bash
# The whole test suite, on a fresh machine with a Rust toolchain and python3:
# installs nats-server when needed, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

WEFT_NATS_SERVER="$(scripts/install-nats-server.sh | tail -n 1)"
export WEFT_NATS_SERVER

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
