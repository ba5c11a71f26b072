"""`avflow eval CLIPS [--ref DIR] [--json OUT] [--report DIR]`: model-free sync, spatial, physics and distribution
metrics; each clip reports its defined metrics, the folder the median |offset| and the ±20 / ±62 ms rates."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path

from avflow.commands.options import add_overwrite, check_folder, check_output

HELP = "score clips: sync offset (ms), sides, spatial audio, physics and Fréchet distance; no downloads"

SHOWN = ("sync_offset_ms", "sync_error_ms", "sync_gt_ms", "side_agreement", "follows_object")  # per-clip progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred_dir", metavar="CLIPS",
                        help="folder of clips: world format (.wav+.npz+.json) or video / .wav files; or one clip's "
                             "file. A video's frames are held in memory while it is measured (long side 320 px): "
                             "a video whose frames would take more than 1.6 GB (5 min 8 s of 16:9 at 30 fps, half "
                             "at 60 fps; ~3.8 GB of memory) is skipped with that reason before it is decoded: cut "
                             "it into parts. A same-name .json is ground truth only with events, offset_ms or "
                             "config in it")  # fmt: skip
    parser.add_argument("--ref", default=None,
                        help="reference folder (clips pair by relative path without suffix), or file for one "
                             "clip")  # fmt: skip
    parser.add_argument("--json", default=None, metavar="OUT", help="write all per-clip and summary metrics here")
    parser.add_argument("--report", default=None, metavar="DIR", help="write DIR/index.html with per-clip timelines")
    parser.add_argument("--quiet", action="store_true", help="no per-clip progress lines")
    add_overwrite(parser)


def check_arguments(args: argparse.Namespace) -> None:
    """Folders that exist, a writable --json path and --report folder, before any clip is scored or torch is
    imported (one-line errors)."""
    from avflow.errors import MediaError, OutputError

    given = {"CLIPS": args.pred_dir, "--ref": args.ref, "--json": args.json, "--report": args.report}
    for what, place in given.items():
        if place == "":  # Path("") is the working folder: CLIPS would walk it, --report write into it
            raise (OutputError if what in ("--json", "--report") else MediaError)(f"{what}: empty path; {EMPTY[what]}")
    for what, place in (("CLIPS", args.pred_dir), ("--ref", args.ref)):
        if place is not None and not Path(place).exists():
            raise MediaError(f"{what} {place}: not found")
    if args.ref is not None and Path(args.ref).is_file() != Path(args.pred_dir).is_file():
        raise MediaError(f"--ref {args.ref}: give a file to pair with one clip's file, a folder with a folder")
    if args.json is not None:
        inputs = _input_files(args, args.json)  # a generator: walked after the cheap checks
        check_output(args.json, (".json",), overwrite=args.overwrite, inputs=inputs, what="--json")
    if args.report is not None:
        report = Path(args.report)
        if report.exists() and not report.is_dir():
            raise OutputError(f"--report {report}: exists and is not a folder")
        _check_report_apart(args, report)
        if (report / "index.html").exists() and not args.overwrite:
            raise OutputError(f"{report / 'index.html'} exists; pass --overwrite (or -y) to replace it")
        if (report / "timelines").exists() and not (report / "index.html").exists():
            raise OutputError(f"{report / 'timelines'} exists and is not a report's (no index.html beside it); "
                              "pick another --report folder")  # fmt: skip
        if (report / "timelines").exists() or (report / "timelines").is_symlink():
            from avflow.eval.html import timelines_problem  # PIL: only for a folder to replace

            problem = timelines_problem(report / "timelines")
            if problem is not None:
                raise OutputError(f"--report {report}: {problem}; pick another --report folder")
        check_folder(report, "--report")


EMPTY = {  # what to give instead of an empty path
    "CLIPS": "give a folder of clips or one clip's file",
    "--ref": "give a folder or file, or leave --ref out",
    "--json": "give a .json file name, or leave --json out",
    "--report": "give a folder, or leave --report out",
}


def _input_files(args: argparse.Namespace, out: str) -> Iterator[Path]:
    """The files of the clips (and reference clips) that the output `out` could replace: each clip with its
    same-stem .json, .wav and .npz (ground truth, sound, world frames), listed only when `out` lies in the folder of
    CLIPS or --ref (finding the clips imports numpy)."""
    target = Path(out).resolve()
    for place in (args.pred_dir, args.ref):
        root = None if place is None else Path(place).resolve()
        if root is None or not target.is_relative_to(root if root.is_dir() else root.parent):
            continue
        from avflow.errors import MediaError
        from avflow.eval.report import find_clips

        try:
            clips = find_clips(place)
        except MediaError:  # no clip to replace; the measuring says so, after the output checks
            continue
        for clip in clips.values():
            stem = clip if Path(f"{clip}.npz").is_file() else clip.with_suffix("")  # a world clip is its stem
            yield clip
            yield from (Path(f"{stem}{suffix}") for suffix in (".json", ".wav", ".npz"))


def _check_report_apart(args: argparse.Namespace, report: Path) -> None:
    """The --report folder neither is, holds nor lies in a folder of clips (CLIPS, --ref), and is not the --json
    file, in or above it, nor holds it in its timelines/ (whose files a report replaces)."""
    from avflow.errors import OutputError

    where = report.resolve()
    for what, place in (("CLIPS", args.pred_dir), ("--ref", args.ref)):
        root = None if place is None else Path(place).resolve()
        if root is not None and root.is_dir() and (where.is_relative_to(root) or root.is_relative_to(where)):
            how = "is" if where == root else "is in" if where.is_relative_to(root) else "holds"
            raise OutputError(f"--report {report}: {how} the {what} folder {place}; pick a report folder apart from "
                              "the clips")  # fmt: skip
    if args.json is not None:
        target = Path(args.json).resolve()
        if where.is_relative_to(target) or target.is_relative_to(where / "timelines"):
            raise OutputError(f"--report {report} and --json {args.json} overlap: the report folder may not be or "
                              "lie in the --json file, nor its timelines/ hold it; pick two places apart")  # fmt: skip


def _clean(value):
    """JSON has no NaN: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _line(cid: str, measures: dict) -> str:
    shown = []
    for k in SHOWN:
        m = measures.get(k)
        if m is not None and m.defined:
            conf = f" (confidence {m.confidence:.2f})" if m.confidence < 1 else ""
            shown.append(f"{k}={m.value:+.1f}{conf}" if k.endswith("_ms") else f"{k}={m.value:.2f}{conf}")
    undefined = [f"{k} ({measures[k].reason})" for k in SHOWN if k in measures and not measures[k].defined]
    return (
        f"  {cid}: "
        + (", ".join(shown) or "no sync or side measure")
        + (f"; undefined: {'; '.join(undefined)}" if undefined else "")
    )


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    from avflow.eval.report import evaluate, format_table

    def progress(cid: str, measures: dict) -> None:
        if not args.quiet:
            print(_line(cid, measures))

    result = evaluate(args.pred_dir, args.ref, progress=progress, keep_details=args.report is not None)
    _print_skips(result)
    print(format_table(result))
    details = result.pop("details", None)
    if args.json:  # first: a report that cannot be written leaves the measures on disk
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_clean(result), indent=1) + "\n")
        print(f"wrote {out}")
    if args.report is not None:
        from avflow.eval.html import write_report

        page = write_report({**result, "details": details}, args.report)
        print(f"wrote {page}")
    return 0


def _print_skips(result: dict) -> None:
    """The clips not measured, and the reference clips that could not be read, each with its reason."""
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])} clip(s), not measured:")
        for cid, reason in result["skipped"].items():
            print(f"  {cid}: {reason}")
    if result["ref_skipped"]:
        print(f"skipped {len(result['ref_skipped'])} reference clip(s), unreadable (a clip paired with one is "
              "measured without its paired measures):")  # fmt: skip
        for cid, reason in result["ref_skipped"].items():
            print(f"  {cid}: {reason}")
