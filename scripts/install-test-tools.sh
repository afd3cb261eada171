#!/usr/bin/env bash
# Installs the Python tools of the test suite (tests/python/requirements.txt, every package
# pinned by version and hash) into a venv of their own, keyed by the file's hash so a change
# to the pins makes a fresh one. Prints the venv's python on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS=tests/python/requirements.txt
TOOLS_DIR="${WEFT_TOOLS_DIR:-$HOME/.cache/weft/tools}"
KEY=$(sha256sum "$REQUIREMENTS" | cut -c1-12)
VENV="$TOOLS_DIR/python-tests-$KEY"

if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
  echo "test tools: installing into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$TOOLS_DIR"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    --only-binary=:all: -r "$REQUIREMENTS" >&2
  touch "$VENV/.complete"
fi
echo "$VENV/bin/python"
