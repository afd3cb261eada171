#!/usr/bin/env bash
# Joins Weft's fleet as an agent of any type: `weft agent` registers with the type,
# capabilities and boundaries below and runs AGENT_COMMAND for each work item
# ({description}, {taskId}, {workId}, {capability}, {boundary} are filled in, shell-quoted).
set -euo pipefail
: "${NATS_URL:?set NATS_URL to the NATS of Weft (weft serve logs it at start)}"
: "${AGENT_TYPE:?set AGENT_TYPE (e.g. codex)}"
: "${AGENT_COMMAND:?set AGENT_COMMAND, the command to run per work item}"
# The original's wrappers read LOOM_PROJECT_ID or PROJECT_ID: both still work.
export LOOMINAL_PROJECT_ID="${LOOMINAL_PROJECT_ID:-${LOOM_PROJECT_ID:-${PROJECT_ID:-default}}}"
export AGENT_CAPABILITIES="${AGENT_CAPABILITIES:-general}"
export AGENT_BOUNDARIES="${AGENT_BOUNDARIES:-personal,open-source}"
export AGENT_MAX_CONCURRENT_TASKS="${AGENT_MAX_CONCURRENT_TASKS:-1}"
export AGENT_TYPE AGENT_COMMAND NATS_URL
exec "${WEFT_BIN:-weft}" agent
