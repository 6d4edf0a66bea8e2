#!/usr/bin/env bash
# Runs buf (proto lint / breaking-change check). buf ships as an npm package (@bufbuild/buf);
# it is installed once into .venv-tools/ (no global npm state).
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=.venv-tools/node_modules/.bin/buf
if [ ! -x "$BUF" ]; then
  mkdir -p .venv-tools
  npm install --silent --no-audit --no-fund --prefix .venv-tools @bufbuild/buf@1.75.0 >/dev/null
fi
exec "$BUF" "$@"
