"""Errors raised for bad user input. The CLI prints them as one line."""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound="AvflowError")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most `limit` characters), else its type's name: what a one-line
    error quotes of a library's exception (urllib's redirect errors and torch's run to many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class AvflowError(Exception):
    """Base class for errors a user can fix (bad file, bad argument, missing weights)."""

    # Under torchrun: True where every rank raises it alike (its settings, a file rank 0 read for all), so the CLI
    # says it once, on rank 0; False where it may be this rank's own (its data, its device), said by the rank that
    # hit it, named. A class sets its default; `on_every_rank` marks one error.
    every_rank = False


class MediaError(AvflowError):
    """A media file cannot be used: no video stream, no frames, unreadable, bad duration."""


class WeightsError(AvflowError):
    """A checkpoint is missing, corrupt, or does not match the model's layout."""


class ConfigError(AvflowError):
    """A configuration has an unknown key, a wrong type or a missing path."""

    every_rank = True  # every rank loads the same settings


class MissingPathError(ConfigError):
    """A configuration names a file or folder that is not on this machine (yet): the config itself may be sound."""


class OutputError(AvflowError):
    """An output path cannot be used: wrong suffix, it would replace an input, or it exists (without --overwrite)."""


class TrainingError(AvflowError):
    """A training run cannot go on: its loss stopped being finite (the checkpoints before it are kept)."""


def on_every_rank(exc: E, alike: bool = True) -> E:
    """`exc` marked as raised alike by every torchrun rank (`alike`: the CLI says it once, on rank 0), or as this
    rank's own (said by this rank, named); returned, to be raised."""
    exc.every_rank = alike
    return exc


class Note(UserWarning):
    """Something in a user's input that was handled rather than refused; the CLI prints it as one line,
    "avflow COMMAND: note: ..."."""


class MediaWarning(Note):
    """Something in a user's media that was handled rather than refused (a damaged packet skipped); the web UI adds
    it to the result's summary."""


class WeightsWarning(Note):
    """Which part of a user's weights file was used where the file holds more than weights (a training
    checkpoint: the network or its EMA, not the optimizer)."""


class TrainingWarning(Note):
    """How a training run went on from its folder: the checkpoint it resumed, the settings changed since."""
