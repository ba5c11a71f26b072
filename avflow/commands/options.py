"""Options shared by the commands that generate and write files, and their checks.

Every check here runs before any weights are read and fails with a one-line error. Outputs follow one convention:
without `-o`, a command writes into `OUTPUT_DIR`; an existing output is an error unless `--overwrite` (`-y`) is given;
an output never replaces an input; nothing is written that was not asked for.
This module imports nothing heavy (torch, PyAV): the parsers that use it must build in well under a second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from avflow.errors import ConfigError, OutputError

OUTPUT_DIR = Path("outputs")  # where every command writes when no output is given
AUDIO_SUFFIXES = (".wav", ".flac")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")  # the containers `avflow.data.mux` writes (its MUX_FORMATS)


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-y", "--overwrite", action="store_true",
                        help="replace output files that exist (without it, an existing output is an error and "
                             "nothing is written)")  # fmt: skip


def _seed(text: str) -> int:
    from avflow.flow.sampling import check_seed

    try:
        return check_seed(int(text), "the seed")
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_seed(parser: argparse.ArgumentParser, *, default: int = 0) -> None:
    """`--seed`: the sampling noise's seed, refused in one line when torch's generator cannot take it."""
    parser.add_argument("--seed", type=_seed, default=default, help=f"random seed (default: {default})")


def add_existing_audio(parser: argparse.ArgumentParser, *, when: str = "", parse=str, unset: bool = False) -> None:
    """`--audio {keep,replace,mix}`: what happens to the video's own audio tracks (`parse` may reject values with a
    more helpful message than argparse's). `unset`: the value is None when not given (a command where --audio applies
    to some tasks only tells "not given" from "keep", then reads `existing_audio(args.audio)`)."""
    from avflow.data.audio_tracks import DEFAULT_EXISTING_AUDIO, EXISTING_AUDIO

    policies = "; ".join(f"{name}: {what}" for name, what in EXISTING_AUDIO.items())
    policies += f" (default: {DEFAULT_EXISTING_AUDIO})"
    parser.add_argument("--audio", choices=list(EXISTING_AUDIO), default=None if unset else DEFAULT_EXISTING_AUDIO,
                        type=parse, metavar="{" + ",".join(EXISTING_AUDIO) + "}",
                        help=f"the video's own audio tracks{when}: {policies}")  # fmt: skip


def existing_audio(value: str | None) -> str:
    """The --audio policy of a parser built with `add_existing_audio(..., unset=True)`: the default when not given."""
    from avflow.data.audio_tracks import DEFAULT_EXISTING_AUDIO

    return DEFAULT_EXISTING_AUDIO if value is None else value


def add_device(parser: argparse.ArgumentParser, *, autocast: bool = True) -> None:
    bf16 = " (with --precision auto, CUDA runs the networks in bf16 where the GPU supports it)" if autocast else ""
    parser.add_argument("--device", default="auto",
                        help=f"cpu, cuda or cuda:N{bf16}; auto: cuda when a GPU is available")  # fmt: skip


def add_precision(parser: argparse.ArgumentParser) -> None:
    """`--precision {auto,fp32,bf16}` (`avflow.precision`); its help says whether bf16 pays off on this CPU."""
    from avflow.precision import DEFAULT_PRECISION, PRECISIONS, precision_help

    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION, help=precision_help())


def resolve_device(name: str) -> str:
    """'cpu', 'cuda' or 'cuda:N' as asked ('auto': cuda when available), or a one-line error when there is no such
    device. Imports torch (not weights)."""
    import torch

    name = str(name).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or name.startswith("cuda:") and name[5:].isdigit():
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available here (torch.cuda.is_available() is False); "
                              "use --device cpu")  # fmt: skip
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        return name
    raise ConfigError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto")


def check_prompt(
    text: str | None, what: str, *, required: bool, left_out: str = "to generate without one"
) -> str | None:
    """The prompt as given; an empty or blank prompt is an error (a missing optional one is None; `left_out` says
    what leaving it out does)."""
    if text is None:
        if required:
            raise ConfigError(f"{what} is required")
        return None
    if not text.strip():
        hint = "describe the sound" if required else f"leave {what} out {left_out}"
        raise ConfigError(f"{what} is empty: {hint}")
    return text


def check_output(
    path: str | Path, suffixes: tuple[str, ...], *, overwrite: bool, inputs: Iterable[str | Path] = (), what: str = "-o"
) -> Path:
    """An output path that may be written: a file name with one of `suffixes`, not one of `inputs`, not an existing
    file unless `overwrite`. Nothing is created."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        names = f"{', '.join(suffixes[:-1])} or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
        raise OutputError(f"{what} {path}: the output must be a {names} file")
    for source in inputs:
        if path.resolve() == Path(source).resolve():
            raise OutputError(f"{what} {path}: this is an input file; choose another output")
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite (or -y) to replace it")
    problem = folder_problem(path.parent)
    if problem is not None:
        raise OutputError(f"{what} {path}: {problem}")
    return path


def check_folder(path: str | Path, what: str) -> Path:
    """An output folder that may be made and written in (`folder_problem`); nothing is left created."""
    problem = folder_problem(Path(path))
    if problem is not None:
        raise OutputError(f"{what} {path}: {problem}")
    return Path(path)


def folder_problem(path: Path) -> str | None:
    """Why files cannot be written in folder `path` (made where missing), or None: it or a folder above it is a
    file, or the deepest of them that exists takes no new file (where it is `path` itself) or folder. That is tried,
    since permission bits do not tell (root may write anywhere but on a read-only or virtual file system such as
    /proc); the probe is removed at once and the folder's times put back."""
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return f"{blocking} is a file, not a folder"
    existing = next(p for p in (path, *path.parents, Path(".")) if p.is_dir())
    times = existing.stat()
    try:
        if existing == path:
            fd, probe = tempfile.mkstemp(dir=existing, prefix=".avflow-write-check-")
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".avflow-write-check-"))
    except OSError as exc:
        return f"cannot write in {existing} ({exc.strerror or exc})"
    try:  # the folder as it was, its modification time included
        os.utime(existing, ns=(times.st_atime_ns, times.st_mtime_ns))
    except OSError:
        pass
    return None


def check_distinct(*paths: Path | None) -> None:
    """Two outputs of one run must not be the same file."""
    seen: set[Path] = set()
    for path in paths:
        if path is None:
            continue
        key = path.resolve()
        if key in seen:
            raise OutputError(f"{path} is given as two different outputs")
        seen.add(key)


class StepBar:
    """A tqdm progress bar fed with (done, total) calls, e.g. solver steps over all windows of one video."""

    def __init__(self, desc: str, unit: str = "step", *, per_window: int | None = None, leave: bool = True):
        self.desc, self.unit, self.per_window, self.leave = desc, unit, per_window, leave
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=self.leave, file=sys.stderr,
                            dynamic_ncols=True)  # fmt: skip
        if self.per_window and total > self.per_window:
            self.bar.set_postfix_str(f"window {(max(done, 1) - 1) // self.per_window + 1}/{total // self.per_window}")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunBar:
    """A tqdm bar over a whole generation run, fed by `FoleyPipeline`'s `progress(done, total)` (work units from
    before the first window's features to the complete audio; `avflow.pipelines.foley.RunProgress`) and its
    `stage(text)` ("window 2/3: sampling", shown after the bar). It shows per cent, elapsed time and an ETA from the
    average rate since the start (tqdm's smoothing=0: windows take about equal time, so the ETA is right at every
    window's end). `tail`: the share of the bar kept for what the command does after generating (muxing, writing the
    files), which `writing()` announces and `finish()` fills."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"

    def __init__(self, desc: str, *, tail: float = 0.02, leave: bool = True):
        self.desc, self.tail, self.leave = desc, tail, leave
        self.bar = None
        self.text = ""

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            extra = max(1, round(total * self.tail)) if self.tail > 0 else 0
            self.bar = tqdm(total=total + extra, desc=self.desc, leave=self.leave, file=sys.stderr, smoothing=0,
                            bar_format=self.FORMAT, dynamic_ncols=True, postfix=self.text or None)  # fmt: skip
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def stage(self, text: str) -> None:
        self.text = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def writing(self, what: str = "writing") -> None:
        self.stage(what)

    def finish(self) -> None:
        """The command's work is done: the bar at its total."""
        if self.bar is not None:
            self.bar.set_postfix_str("done", refresh=False)
            self.bar.update(self.bar.total - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunOutputs:
    """The files one run writes. When a later step fails, the files already written (`wrote`) and the folders made
    for them are removed again and a file that was there before (replaced with --overwrite) is put back, so a failed
    run leaves every folder as it was. The old file is kept as a hard link beside it while the run lasts (every
    writer replaces its output by renaming a finished temporary file, so the link keeps the old bytes; a copy
    where links are not allowed)."""

    def __init__(self, *paths: Path | None):
        parents = [p for path in paths if path is not None for p in (path.parent, *path.parent.parents)]
        self.made = sorted({p for p in parents if not p.exists()}, key=lambda p: len(p.parts), reverse=True)
        self.targets = [Path(p) for p in paths if p is not None]
        self.kept: dict[Path, Path] = {}  # an output that existed -> its old bytes, until the run ends
        self.written: list[Path] = []

    def wrote(self, path: Path) -> Path:
        self.written.append(Path(path))
        return path

    def __enter__(self) -> RunOutputs:
        import shutil

        for path in self.targets:
            if path.is_file() and path not in self.kept:
                old = path.with_name(f".{path.name}.before{os.getpid()}")
                try:
                    os.link(path, old)
                except OSError:  # another file system's rules: a copy
                    shutil.copy2(path, old)
                self.kept[path] = old
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        if kind is not None:
            for path in self.written:
                if path not in self.kept:
                    path.unlink(missing_ok=True)
            for path, old in self.kept.items():
                os.replace(old, path)  # the file as it was
            for folder in self.made:  # deepest first; a folder that is not empty stays
                try:
                    folder.rmdir()
                except OSError:
                    pass
        else:
            for old in self.kept.values():
                old.unlink(missing_ok=True)
        return False
