#!/usr/bin/env bash
# The whole test suite, on a fresh machine with a Rust toolchain and python3:
# installs nats-server and the Python test tools when needed, checks formatting and lints,
# runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

WEFT_NATS_SERVER="$(scripts/install-nats-server.sh | tail -n 1)"
export WEFT_NATS_SERVER
# Python tools of the tests (generated client, schemathesis, MCP client, Compose schema),
# pinned with hashes in tests/python/requirements.txt.
WEFT_TEST_PYTHON="$(scripts/install-test-tools.sh | tail -n 1)"
export WEFT_TEST_PYTHON

# Test fixtures from Debian: a real sshd on 127.0.0.1 for the ssh mechanism (started by
# its tests), and headless Chromium for the dashboard test.
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} for the tests" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "the tests need ${missing[*]} (Debian packages); they will fail without" >&2
  fi
fi
# playwright-core drives that Chromium; pinned by tests/dashboard/package-lock.json.
(cd tests/dashboard && npm ci --silent --no-audit --no-fund >&2)

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
