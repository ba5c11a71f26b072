"""`avflow eval PRED_DIR [--ref DIR] [--json OUT]`: model-free sync, spatial, physics and distribution metrics."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from avflow.commands.options import add_overwrite, check_output

HELP = "score generated clips: sync (ms), spatial audio, physics and Fréchet distance, no downloads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred_dir", help="folder of clips: world format (.wav+.npz+.json) or .mp4 / .wav files")
    parser.add_argument("--ref", default=None, help="reference folder; clips pair by relative path without suffix")
    parser.add_argument("--json", default=None, metavar="OUT", help="write all per-clip and mean metrics here")
    parser.add_argument("--quiet", action="store_true", help="no per-clip progress lines")
    add_overwrite(parser)


def check_arguments(args: argparse.Namespace) -> None:
    """Folders that exist and a writable --json path, before any clip is scored (one-line errors)."""
    from avflow.errors import MediaError

    for what, folder in (("PRED_DIR", args.pred_dir), ("--ref", args.ref)):
        if folder is not None and not Path(folder).is_dir():
            raise MediaError(f"{what} {folder}: not a folder")
    if args.json is not None:
        check_output(args.json, (".json",), overwrite=args.overwrite, what="--json")


def _clean(value):
    """JSON has no NaN: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def run(args: argparse.Namespace) -> int:
    from avflow.eval.report import evaluate, format_table

    check_arguments(args)

    def progress(cid: str, metrics: dict) -> None:
        if not args.quiet:
            shown = ", ".join(f"{k}={v:.3g}" for k, v in metrics.items() if k.startswith(("sync_gt", "sync_vis")))
            print(f"  {cid}: {shown}")

    result = evaluate(args.pred_dir, args.ref, progress=progress)
    print(format_table(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_clean(result), indent=1) + "\n")
        print(f"wrote {out}")
    return 0
