"""`avflow ui`: serve the web app (joint generation, foley, binaural) on localhost."""

from __future__ import annotations

import argparse
import importlib.util
import math
import re
from pathlib import Path

from avflow.commands.options import check_folder
from avflow.errors import AvflowError, WeightsError, first_line

HELP = "serve the web UI (needs the [ui] extra: pip install 'avflow[ui]')"
FILE_SIZE = re.compile(r"(\d+)(b|kb|mb|gb|tb)", re.IGNORECASE)  # what the server's upload limit takes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from avflow.ui.services import STEPS_RANGE, UISettings

    defaults = UISettings()
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port")
    low, high = STEPS_RANGE
    parser.add_argument("--steps", type=int, default=None,
                        help=f"steps each tab starts at, {low} to {high} (default: its model's)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="requests generating at once")
    parser.add_argument("--max-file-size", default=defaults.max_file_size, help="upload limit, e.g. 200mb")
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir, help="where results are written")
    parser.add_argument("--keep-hours", type=float, default=defaults.keep_hours,
                        help="hours a result is kept, in --output-dir and in gradio's cache, before it is removed")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument("--model", default=None,
                        help="the Generate tab's joint model: a model folder or a training run folder, as `avflow "
                             "generate --model` takes (default: the shipped model)")  # fmt: skip
    parser.add_argument("--foley-model", default=defaults.foley_model,
                        help="the Foley tab's model: an official MMAudio name or a model config .json, as `avflow "
                             "foley --model` takes")  # fmt: skip
    parser.add_argument("--foley-weights", default=None,
                        help="network weights on top of --foley-model, as `avflow foley --weights` takes")


def check_arguments(args: argparse.Namespace) -> None:
    """One-line errors for what the server would otherwise refuse with a traceback (a port out of range, a size it
    cannot parse) or an errno (an output folder that is a file), and for models it could not load (a folder with no
    joint model or a broken one, an unknown foley model, a weights file that is not there or does not fit), before
    gradio is imported; weights are checked from their files' headers (keys and shapes), not read."""
    from avflow.ui.services import STEPS_RANGE

    low, high = STEPS_RANGE  # the page's steps sliders take these too
    if (args.steps is not None and args.steps < low) or args.concurrency < 1:
        raise AvflowError(f"--steps and --concurrency must be at least {low}")
    if args.steps is not None and args.steps > high:
        raise AvflowError(f"--steps must be from {low} to {high} (the page's steps sliders), got {args.steps}")
    if not 0 < args.keep_hours < math.inf:  # nan too
        raise AvflowError(f"--keep-hours must be a number of hours above 0, got {args.keep_hours:g}")
    if not 1 <= args.port <= 65535:
        raise AvflowError(f"--port must be from 1 to 65535, got {args.port}")
    size = FILE_SIZE.fullmatch(args.max_file_size.replace(" ", ""))
    if size is None or int(size.group(1)) == 0:
        raise AvflowError(f"--max-file-size {args.max_file_size!r}: give a whole number and a unit, e.g. 200mb, 2gb")
    check_folder(args.output_dir, "--output-dir")
    from avflow.pipelines.foley import check_model, check_model_files, config_name, local_model_files

    if args.model is not None:
        check_joint_model(Path(args.model))  # a folder that holds no joint model (or a broken one) says so now
    spec = check_model(args.foley_model, args.foley_weights, weights_option="--foley-weights")  # unknown, missing
    files = local_model_files(spec)  # the files at hand (weights files, the cache's converted ones): headers only
    check_model_files(spec, files, config_name(args.foley_model, args.foley_weights))


def check_joint_model(folder: Path) -> None:
    """The joint model in `folder` (a model folder or a training run folder): its config.json (or run config), and
    its weights file's keys and shapes against the network that config builds on the meta device, from the file's
    header alone; one-line errors, as loading it would give them, in well under a second."""
    import torch

    from avflow.models.joint import JointModel
    from avflow.pipelines.default_model import WEIGHT_FILES, read_default_config
    from avflow.weights import load_strict, read_state_dict, run_weights_file

    config = read_default_config(folder)
    own = (folder / "config.json").is_file()
    file = folder / WEIGHT_FILES[0] if own else run_weights_file(folder)
    if not file.is_file():
        raise WeightsError(f"{folder}: model files missing: {WEIGHT_FILES[0]}")
    try:
        state = read_state_dict(file, meta=True)
        if state is None:  # not readable from its header alone: the full read names what is wrong, when it loads
            return
        with torch.device("meta"):
            model = JointModel(config.joint)
        load_strict(model, state, str(file), assign=True)
    except WeightsError as exc:
        raise WeightsError(f"{folder}: cannot load its model: {first_line(exc)}") from None


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    if importlib.util.find_spec("gradio") is None:
        raise AvflowError("the UI needs gradio: pip install 'avflow[ui]'")
    from avflow.ui.app import launch
    from avflow.ui.services import UISettings

    settings = UISettings(
        steps=args.steps,
        concurrency=args.concurrency,
        max_file_size=args.max_file_size,
        output_dir=args.output_dir,
        keep_hours=args.keep_hours,
        model=args.model,
        foley_model=args.foley_model,
        foley_weights=args.foley_weights,
    )
    launch(settings, host=args.host, port=args.port, share=args.share)
    return 0
