#!/usr/bin/env bash
# The main job, from a fresh machine: set up the environment (tools/setup_env.sh), generate the
# shapes quick-start data, train on CPU for a few minutes and print the evaluation table; then plot
# the training curves and draw the trained model's predictions on a few validation images.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$SEG_D2_ROOT"
CONFIG="${SEG_D2_QUICKSTART_CONFIG:-configs/Shapes-SemanticSegmentation/unet_classic_c16_d3_scratch_adam_bs4_160it.yaml}"
echo "[quickstart] training $CONFIG on the generated shapes dataset"
python -W ignore::FutureWarning tools/train_net.py --config-file "$CONFIG" "$@"

# The run's OUTPUT_DIR: the config's, unless the extra arguments override it.
OUT="$(python -W ignore - "$CONFIG" "$@" <<'PY'
import sys
from detectron2.engine import default_argument_parser
from seg_d2.utils.predictor import load_config
args = default_argument_parser().parse_args(["--config-file", *sys.argv[1:]])
print(load_config(args.config_file, args.opts).OUTPUT_DIR)
PY
)"
WEIGHTS="$OUT/model_final.pth"
[ -f "$WEIGHTS" ] || WEIGHTS="$OUT/$(cat "$OUT/last_checkpoint")"
echo "[quickstart] training curves (tools/plot_metrics.py):"
python tools/plot_metrics.py "$OUT" --output "$OUT/plots" --no-show
echo "[quickstart] predictions on 4 validation images (tools/demo.py):"
python -W ignore::FutureWarning tools/demo.py --config-file "$OUT/config.yaml" \
  --input "${DETECTRON2_DATASETS:-datasets}/seg_d2_shapes/images/val/0000[0-3].png" \
  --output "$OUT/overlays" --opts MODEL.WEIGHTS "$WEIGHTS"
echo "[quickstart] done: curves in $OUT/plots, overlays in $OUT/overlays"
echo "[quickstart] to run python tools/... yourself in a new shell, activate the environment first:"
echo "    source $VENV/bin/activate"
