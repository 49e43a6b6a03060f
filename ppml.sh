#!/usr/bin/env bash
# One entry point that sets itself up: ./ppml.sh demo | test | run <module> [flags] | setup
#   ./ppml.sh demo     -> the centralized-vs-federated DP comparison on the embedded digits data
#   ./ppml.sh test     -> the test suite (pytest; pass e.g. -m "not slow" for the quick subset)
# Setup (first call only): uv (pinned) in .tools/, then `uv sync --frozen` into .venv/ from uv.lock.
set -euo pipefail
cd "$(dirname "$0")"
UV_VERSION=0.13.8

find_python() {
  for p in python3.11 python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

setup() {
  local uv
  if [ -x .tools/bin/uv ]; then
    uv=.tools/bin/uv
  else
    local py
    if py=$(find_python); then
      "$py" -m venv .tools && .tools/bin/pip install -q "uv==${UV_VERSION}"
    else  # no Python 3.11 here: a standalone uv installs one
      python3 -m venv .tools && .tools/bin/pip install -q "uv==${UV_VERSION}"
      .tools/bin/uv python install 3.11
    fi
    uv=.tools/bin/uv
  fi
  if [ ! -f .venv/.synced ] || [ uv.lock -nt .venv/.synced ] || [ pyproject.toml -nt .venv/.synced ]; then
    "$uv" sync --frozen --extra dev --python 3.11
    touch .venv/.synced
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec .venv/bin/python -m pipelines.compare "$@" ;;
  test) setup; exec .venv/bin/python -m pytest "$@" ;;
  run) setup; mod=$1; shift; exec .venv/bin/python -m "pipelines.$mod" "$@" ;;
  *) sed -n '2,5p' "$0"; exit 2 ;;
esac
