#!/usr/bin/env bash
# Joins Weft's fleet as a GitHub Copilot CLI agent: runs `copilot -p <description>` for
# each work item, unattended, in its JSON output so Weft records the result, premium requests
# and usage limits; tools from COPILOT_ALLOW_TOOLS / COPILOT_DENY_TOOLS (deny wins). Corporate work may only go to agents like this one (and only if they
# list the `corporate` boundary), so that is the default here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
copilot="${COPILOT_BIN:-copilot}"
command -v "$copilot" >/dev/null || { echo "copilot-cli/bootstrap.sh: '$copilot' is not on PATH" >&2; exit 2; }
export AGENT_TYPE=copilot-cli
export AGENT_BOUNDARIES="${AGENT_BOUNDARIES:-corporate,corporate-adjacent}"
tools=""
for t in ${COPILOT_ALLOW_TOOLS:-write shell(git:*)}; do tools="$tools --allow-tool '$t'"; done
for t in ${COPILOT_DENY_TOOLS:-shell(rm:*) shell(git push:*)}; do tools="$tools --deny-tool '$t'"; done
export AGENT_OUTPUT_FORMAT=copilot-json
export AGENT_COMMAND="$copilot -p {description} --output-format json --no-ask-user$tools ${COPILOT_ARGS:-}"
exec "$here/../generic/bootstrap.sh"
