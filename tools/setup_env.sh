#!/usr/bin/env bash
# Idempotent set-up, sourced by tools/quickstart.sh and tools/test.sh:
# creates the virtual environment (default ./.venv, or $SEG_D2_VENV) if missing, installs the pinned
# requirements, provisions detectron2, installs seg_d2 in editable mode and byte-compiles its sources.
# detectron2 is the provisioned v0.6, or, with SEG_D2_DETECTRON2_SOURCE set to a source tree or tarball
# (e.g. detectron2 main), compiled from it (tools/install_detectron2.py --source, wheel cached by sha256).
set -euo pipefail
SEG_D2_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEG_D2_VENV:-$SEG_D2_ROOT/.venv}"
PY="$VENV/bin/python"
# SEG_D2_VENV_SEED=DIR (.ci/run's second environment): start from a copy of that set-up environment made of hard
# links, so its packages take no second copy of the disk (torch's CUDA build alone is 5 GB); pip and compileall
# replace files rather than write into them, so what is installed here afterwards leaves DIR as it is.
SEED="${SEG_D2_VENV_SEED:-}"
if [ ! -x "$PY" ] && [ -n "$SEED" ] && [ -x "$SEED/bin/python" ] && rm -rf "$VENV.tmp" &&
   cp -al "$SEED" "$VENV.tmp" 2> /dev/null; then
  echo "[setup] creating virtual environment $VENV from $SEED (hard links)"
  # its scripts and pyvenv.cfg name the seed's path (sed -i writes new files: the seed's stay as they are)
  { grep -rlIZ --fixed-strings "$SEED" "$VENV.tmp/bin" "$VENV.tmp/pyvenv.cfg" || true; } |
    xargs -0 -r sed -i "s#$SEED#$VENV#g"
  mv "$VENV.tmp" "$VENV"
elif [ ! -x "$PY" ]; then
  rm -rf "$VENV.tmp"
  echo "[setup] creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.seg_d2_requirements.sha"
want="$(cat "$SEG_D2_ROOT"/requirements/*.txt "$SEG_D2_ROOT/setup.py" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned requirements (requirements/test.txt)"
  "$PY" -m pip install -q -r "$SEG_D2_ROOT/requirements/test.txt"
  "$PY" -m pip install -q --no-deps -r "$SEG_D2_ROOT/requirements/no-deps.txt"  # see the file: stale pins
  "$PY" -m pip install -q --no-deps --no-build-isolation -e "$SEG_D2_ROOT"
  echo "$want" > "$stamp"
else
  echo "[setup] pinned requirements already installed in $VENV"
fi
"$PY" "$SEG_D2_ROOT/tools/install_detectron2.py" ${SEG_D2_DETECTRON2_SOURCE:+--source "$SEG_D2_DETECTRON2_SOURCE"}
# seg_d2 is installed editable, so pip compiled none of its modules; where PYTHONDONTWRITEBYTECODE is set
# (as on our CI machines) every process would compile them again at import (~0.7 s of each start-up).
"$PY" -m compileall -q -j 0 "$SEG_D2_ROOT/seg_d2" "$SEG_D2_ROOT/seg_d2_ops" "$SEG_D2_ROOT/tools" > /dev/null
export PATH="$VENV/bin:$PATH"
