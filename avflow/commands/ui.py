"""`avflow ui`: serve the web app (joint generation, foley, binaural) on localhost."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from avflow.errors import AvflowError

HELP = "serve the web UI (needs the [ui] extra: pip install 'avflow[ui]')"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from avflow.ui.services import UISettings

    defaults = UISettings()
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="sampling steps to start with")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="requests generating at once")
    parser.add_argument("--max-file-size", default=defaults.max_file_size, help="upload limit, e.g. 200mb")
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir, help="where results are written")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise AvflowError("the UI needs gradio: pip install 'avflow[ui]'")
    if args.steps < 1 or args.concurrency < 1:
        raise AvflowError("--steps and --concurrency must be at least 1")
    from avflow.ui.app import launch
    from avflow.ui.services import UISettings

    settings = UISettings(
        steps=args.steps,
        concurrency=args.concurrency,
        max_file_size=args.max_file_size,
        output_dir=args.output_dir,
    )
    launch(settings, host=args.host, port=args.port, share=args.share)
    return 0
