#!/usr/bin/env bash
# The main job, from a fresh machine: set up the environment (tools/setup_env.sh), generate the
# shapes quick-start data, train on CPU for a few minutes and print the evaluation table.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$SEG_D2_ROOT"
CONFIG="${SEG_D2_QUICKSTART_CONFIG:-configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs4_200it.yaml}"
echo "[quickstart] training $CONFIG on the generated shapes dataset"
python -W ignore::FutureWarning tools/train_net.py --config-file "$CONFIG" "$@"
