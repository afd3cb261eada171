#!/usr/bin/env bash
# The whole test suite, on a fresh machine with a Rust toolchain and python3:
# installs nats-server when needed, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

WEFT_NATS_SERVER="$(scripts/install-nats-server.sh | tail -n 1)"
export WEFT_NATS_SERVER

# The ssh mechanism is tested against a real sshd on 127.0.0.1 (started by the test).
if [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing openssh-server for the ssh tests" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >&2
  else
    echo "the ssh tests need /usr/sbin/sshd: install openssh-server (they will fail without it)" >&2
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
