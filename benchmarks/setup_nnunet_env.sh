#!/usr/bin/env bash
# Creates a separate virtual environment for nnU-Net v2 (the peer of benchmarks/nnunet_peer.py) and installs
# nnunetv2==2.8.1 in it on the same torch as seg_d2's .venv (torch 2.14.1, torchvision 0.29.1, from pip's
# ordinary indexes and cache, as tools/setup_env.sh installs them): torch first, then nnunetv2 under a
# constraint file that pins torch/torchvision, so that pip cannot swap them for another release.
#   usage: benchmarks/setup_nnunet_env.sh [VENV]   (default /work/nnunet-venv)
set -euo pipefail
VENV="${1:-/work/nnunet-venv}"
TORCH="${NNUNET_TORCH:-2.14.1}"
TORCHVISION="${NNUNET_TORCHVISION:-0.29.1}"
NNUNET="${NNUNET_VERSION:-2.8.1}"
start=$(date +%s)
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
constraints="$VENV/nnunet-constraints.txt"
printf 'torch==%s\ntorchvision==%s\n' "$TORCH" "$TORCHVISION" > "$constraints"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==$TORCH" "torchvision==$TORCHVISION"
"$PY" -m pip install -q -c "$constraints" "nnunetv2==$NNUNET"
"$PY" -m pip check || true  # report, do not fail on, unrelated metadata conflicts
"$PY" - <<EOF
import torch, torchvision, nnunetv2, importlib.metadata as md
assert torch.__version__.split("+")[0] == "$TORCH", torch.__version__
assert torchvision.__version__.split("+")[0] == "$TORCHVISION", torchvision.__version__
print("torch", torch.__version__, "torchvision", torchvision.__version__, "nnunetv2", md.version("nnunetv2"))
EOF
"$VENV/bin/nnUNetv2_plan_and_preprocess" -h > /dev/null
echo "[setup_nnunet_env] $VENV ready in $(( $(date +%s) - start )) s"
