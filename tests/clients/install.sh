#!/usr/bin/env bash
# Install the pinned agent CLIs that tests/clients drives (package-lock.json), without network at run time:
# `npm ci --ignore-scripts` (no install script may download anything), then Claude Code's own linker, which only
# hard-links its native binary from the platform package npm installed as an optional dependency. npm's cache
# (~/.npm) stays on the machine between runs; node_modules is reused while the lock file is unchanged.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "tests/clients: node/npm not found; the client tests will be skipped"
    exit 0
fi
stamp=node_modules/.capsem-lock-sha256
sha=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sha" ]; then
    echo "tests/clients: agent CLIs already installed"
    exit 0
fi
started=$(date +%s)
npm ci --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error
node node_modules/@anthropic-ai/claude-code/install.cjs
echo "$sha" > "$stamp"
echo "tests/clients: agent CLIs installed in $(( $(date +%s) - started ))s"
