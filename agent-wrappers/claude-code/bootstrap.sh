#!/usr/bin/env bash
# Joins Weft's fleet as a Claude Code agent: runs `claude -p <description>` for each work
# item. Capabilities and boundaries come from AGENT_CAPABILITIES / AGENT_BOUNDARIES.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
claude="${CLAUDE_BIN:-claude}"
command -v "$claude" >/dev/null || { echo "claude-code/bootstrap.sh: '$claude' is not on PATH" >&2; exit 2; }
export AGENT_TYPE=claude-code
export AGENT_COMMAND="$claude -p {description} ${CLAUDE_ARGS:-}"
exec "$here/../generic/bootstrap.sh"
