#!/usr/bin/env python
"""Write a tiny dataset in the Cityscapes layout (train + val, 2 cities each), for tests and quick runs.

Examples:
    python tools/make_cityscapes_fixture.py --root /tmp/d2data/cityscapes
    DETECTRON2_DATASETS=/tmp/d2data python tools/train_net.py --config-file \\
        configs/Cityscapes-SemanticSegmentation/unet_R_50_bs8_90k.yaml MODEL.WEIGHTS "" ...
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_d2.data.datasets.cityscapes_fixture import (  # noqa: E402
    HEIGHT, IMAGES_PER_CITY, WIDTH, generate_cityscapes_fixture,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the 'cityscapes' folder to create (it must not exist)")
    parser.add_argument("--images-per-city", type=int, default=IMAGES_PER_CITY)
    parser.add_argument("--height", type=int, default=HEIGHT)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.images_per_city < 1:
        parser.error("--images-per-city must be >= 1")
    if args.height < 96 or args.width < 192:
        parser.error("--height must be >= 96 and --width >= 192 (the scenes' objects need the room)")
    if os.path.exists(args.root) and not os.path.isfile(os.path.join(args.root, "DONE")):
        parser.error(f"'{args.root}' exists and is not a finished fixture: choose a new folder")
    wrote = generate_cityscapes_fixture(args.root, images_per_city=args.images_per_city, height=args.height,
                                        width=args.width, seed=args.seed)
    print(f"{'Wrote' if wrote else 'Already there:'} {os.path.abspath(args.root)}")
    if os.path.basename(os.path.normpath(args.root)) == "cityscapes":
        print(f"Use it with DETECTRON2_DATASETS={os.path.dirname(os.path.abspath(args.root))} "
              f"(datasets seg_d2_cityscapes_fine_{{sem_seg,instance_seg}}_{{train,val}}).")
    else:
        print("Note: seg_d2's registered Cityscapes datasets read $DETECTRON2_DATASETS/cityscapes; name the "
              "folder 'cityscapes' to use them.")


if __name__ == "__main__":
    main()
