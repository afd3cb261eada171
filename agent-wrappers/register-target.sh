#!/usr/bin/env bash
# Registers this machine with Weft as an ssh spin-up target, so Weft can start agents here
# on demand (it runs the bootstrap script over ssh with NATS_URL and the rest exported).
#   SSH_KEY_PATH=~/.weft/id_ed25519 AGENT_CAPABILITIES=rust,typescript ./register-target.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${SSH_KEY_PATH:?set SSH_KEY_PATH, the key Weft authenticates with (a path on the Weft machine)}"
type="${AGENT_TYPE:-claude-code}"
exec "${SHUTTLE_BIN:-shuttle}" targets add \
  --name "${TARGET_NAME:-$(hostname)}" \
  --type "$type" \
  --mechanism ssh \
  --host "${TARGET_HOST:-$(hostname)}" \
  --user "${TARGET_USER:-${USER:-$(id -un)}}" \
  --key "$SSH_KEY_PATH" \
  --command "${BOOTSTRAP:-$here/$type/bootstrap.sh}" \
  --capabilities "${AGENT_CAPABILITIES:-general}" \
  --boundaries "${AGENT_BOUNDARIES:-personal,open-source}"
