#!/usr/bin/env bash
# Joins Weft's fleet as a GitHub Copilot CLI agent: runs `copilot -p <description>` for
# each work item. Corporate work may only go to agents like this one (and only if they
# list the `corporate` boundary), so that is the default here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
copilot="${COPILOT_BIN:-copilot}"
command -v "$copilot" >/dev/null || { echo "copilot-cli/bootstrap.sh: '$copilot' is not on PATH" >&2; exit 2; }
export AGENT_TYPE=copilot-cli
export AGENT_BOUNDARIES="${AGENT_BOUNDARIES:-corporate,corporate-adjacent}"
export AGENT_COMMAND="$copilot -p {description} ${COPILOT_ARGS:-}"
exec "$here/../generic/bootstrap.sh"
