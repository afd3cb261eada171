#!/usr/bin/env bash
# Joins Weft's fleet as a Claude Code agent: runs `claude -p <description>` for each work
# item, unattended, in its structured output (stream-json) so Weft records the result, the
# cost and usage limits. Capabilities and boundaries come from AGENT_CAPABILITIES /
# AGENT_BOUNDARIES; what Claude may do, from CLAUDE_PERMISSION_MODE / CLAUDE_ALLOWED_TOOLS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
claude="${CLAUDE_BIN:-claude}"
command -v "$claude" >/dev/null || { echo "claude-code/bootstrap.sh: '$claude' is not on PATH" >&2; exit 2; }
export AGENT_TYPE=claude-code
permissions="--permission-mode ${CLAUDE_PERMISSION_MODE:-acceptEdits}"
if [ -n "${CLAUDE_ALLOWED_TOOLS:-}" ]; then permissions="$permissions --allowedTools $CLAUDE_ALLOWED_TOOLS"; fi
export AGENT_OUTPUT_FORMAT=claude-stream-json
# Expanded per item by the shell that runs the command: an item's maxCostUsd.
# (The same for a retry that resumes its earlier session, when the item asked for it.)
budget='${WEFT_MAX_COST_USD:+--max-budget-usd "$WEFT_MAX_COST_USD"} ${WEFT_RESUME_SESSION:+--resume "$WEFT_RESUME_SESSION"}'
export AGENT_COMMAND="$claude -p {description} --output-format stream-json --verbose $permissions $budget ${CLAUDE_ARGS:-}"
exec "$here/../generic/bootstrap.sh"
