"""The `avflow` command line as a user meets it: parsers that build without torch, help that shows every default,
argument errors in one line, and bad inputs to generate, binaural and eval refused in one line before any weights are
read, leaving the folder as it was. (Foley, t2a and i2a: tests/test_foley_cli.py.) Start-up time itself is measured
by benchmarks/cli_startup.py. `generate` and `demo` read a tiny random default model folder put in place of the
shipped one."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import WeightReads, listing, moving_square, write_tiny_default_model

from avflow.cli import COMMANDS, HelpFormatter, Parser, main
from avflow.data.media import write_video
from avflow.pipelines import default_model

REPO = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_default_model(tmp_path_factory.mktemp("tiny_v2"))


@pytest.fixture(autouse=True)
def _tiny_default_model(tiny_model, monkeypatch):
    """`avflow generate` and `avflow demo` without --model read this tiny v2 folder, not the shipped weights."""
    monkeypatch.setattr(default_model, "default_model_dir", lambda: tiny_model)


def test_every_parser_builds_without_torch_numpy_or_pyav():
    """`avflow --help` imports every command module, `avflow CMD --help` builds that command's parser: neither may
    import the heavy libraries (their import alone takes seconds on a loaded machine)."""
    code = (
        "import sys, importlib, avflow.cli as c\n"
        "for name, module in c.COMMANDS.items():\n"
        "    p = c.Parser(prog=name, formatter_class=c.HelpFormatter)\n"
        "    importlib.import_module(module).add_arguments(p)\n"
        "    p.format_help()\n"
        "print(sorted(m for m in ('torch', 'numpy', 'av', 'scipy', 'PIL', 'soundfile', 'yaml') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    "argv",
    [["t2a", ""], ["t2a", "rain", "--duration", "0"], ["foley", "missing.mp4"], ["generate", "a", "-o", "x.wav"],
     ["binaural", "missing.mp4"]],
)  # fmt: skip
def test_plain_argument_errors_need_no_heavy_import(argv):
    """The commands' own checks that need no media file answer before torch, numpy or PyAV are imported."""
    code = (
        "import sys\nfrom avflow.cli import main\n"
        f"assert main({argv!r}) == 2\n"
        "print(sorted(m for m in ('torch', 'numpy', 'av') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1


def _parser(name: str) -> argparse.ArgumentParser:
    parser = Parser(prog=f"avflow {name}", formatter_class=HelpFormatter)
    importlib.import_module(COMMANDS[name]).add_arguments(parser)
    return parser


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_states_every_default(name):
    parser = _parser(name)
    parsers = [parser] + [
        sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        for sub in action.choices.values()
    ]  # fmt: skip
    for p in parsers:
        text = " ".join(p.format_help().split())
        for action in p._actions:
            if not action.option_strings or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
                continue  # 0 and 0.0 are shown (they equal False, yet are real defaults)
            shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
            assert f"default: {shown}" in text, (name, action.option_strings, action.default)


def test_argument_errors_are_one_line(capsys):
    assert main(["foley"]) == 2
    assert main(["t2a", "rain", "--steps", "x"]) == 2
    assert main(["world", "--n", "2"]) == 2  # --out missing; the action may be left out
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3
    assert "required: video" in errors[0] and "(see avflow foley --help)" in errors[0]
    assert "--steps: invalid int value: 'x'" in errors[1]
    assert "required: --out" in errors[2] and "action" not in errors[2]
    assert main(["foley", "--help"]) == 0
    assert "default: keep" in " ".join(capsys.readouterr().out.split())


def test_t2a_takes_its_prompt_one_way(capsys):
    assert main(["t2a", "rain", "--prompt", "wind"]) == 2
    assert "unrecognized arguments: --prompt wind" in capsys.readouterr().err


def test_world_action_may_be_left_out(tmp_path):
    assert main(["world", "--n", "1", "--out", str(tmp_path / "w"), "--duration", "1"]) == 0
    assert (tmp_path / "w" / "train").is_dir()


# ------------------------------------------------------------------------------------------------------------------
# generate, binaural and eval: bad inputs before any weights are read


UNWRITABLE = "/proc/avflow-test"  # Linux's /proc takes no new file or folder, not even from root


def bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    frames = np.repeat(np.repeat(moving_square(t=20, h=16, w=32), 2, axis=1), 2, axis=2)  # (20, 32, 64, 3)
    sound = np.random.default_rng(0).uniform(-0.1, 0.1, (1, 2 * SR)).astype(np.float32)
    good = write_video(tmp / "good.mp4", frames, 16, sound, SR)
    silent = write_video(tmp / "silent.mp4", frames, 16)
    short = write_video(tmp / "short.mp4", frames[:5], 16, sound, SR)  # 0.3125 s
    (tmp / "taken.mp4").write_bytes(b"an existing output")
    (tmp / "notes.wav").write_text("not audio")
    out = str(tmp / "o.mp4")
    for name in ("clip.safetensors", "sync.pth", "vae.pth"):
        (tmp / name).write_bytes(b"weights")
    weights = ["--clip-weights", str(tmp / "clip.safetensors"), "--synchformer-weights", str(tmp / "sync.pth"),
                     "--vae-weights", str(tmp / "vae.pth")]  # fmt: skip
    return {
        "empty prompt": (["generate", "  ", "-o", out], "the prompt is empty"),
        "zero duration": (["generate", "a ball", "-o", out, "--duration", "0"], "--duration must be at least 0.5 s"),
        "short duration": (["generate", "a ball", "-o", out, "--duration", "0.3"], "at least 0.5 s, got 0.3"),
        "long duration": (["generate", "a ball", "-o", out, "--duration", "90"], "at most 60 s"),
        "wav output": (["generate", "a ball", "-o", str(tmp / "x.wav")], "must be a .mp4, .m4v or .mov"),
        "existing output": (["generate", "a ball", "-o", str(tmp / "taken.mp4")], "exists; pass --overwrite (or -y)"),
        "spectrogram suffix": (["generate", "a ball", "-o", out, "--spectrogram", str(tmp / "s.jpg")], "a .png file"),
        "zero steps": (["generate", "a ball", "-o", out, "--steps", "0"], "steps must be an integer >= 1"),
        "huge steps": (["generate", "a ball", "-o", out, "--steps", "1" + "0" * 20], "and <= 10000, got 1000000"),
        "nan cfg": (["generate", "a ball", "-o", out, "--cfg", "nan"], "cfg_strength must be a finite number > 0"),
        "a2v without audio": (["generate", "a ball", "-o", out, "--task", "a2v"], "--task a2v needs --audio-file"),
        "continue without video": (["generate", "a ball", "-o", out, "--task", "continue"],
                                   "--task continue needs --video"),  # fmt: skip
        "continue silent clip": (["generate", "a", "-o", out, "--task", "continue", "--video", str(silent)],
                                 "has no audio track"),  # fmt: skip
        "a2v not audio": (["generate", "a", "-o", out, "--task", "a2v", "--audio-file", str(tmp / "notes.wav")],
                          "notes.wav"),  # fmt: skip
        "t2av given a video": (["generate", "a ball", "-o", out, "--video", str(good)],
                               "--video is read by --task v2a or --task continue only (--task is t2av)"),  # fmt: skip
        "v2a given an audio file": (["generate", "a", "-o", out, "--task", "v2a", "--video", str(good), "--audio-file",
                                     str(good)], "--audio-file is read by --task a2v only"),  # fmt: skip
        "continue given a policy": (["generate", "a", "-o", out, "--task", "continue", "--video", str(good), "--audio",
                                     "mix"], "--audio is read by --task v2a only"),  # fmt: skip
        "old --audio FILE": (["generate", "a ball", "-o", out, "--task", "a2v", "--audio", "sound.wav"],
                             "is given with --audio-file FILE"),  # fmt: skip
        "v2a short video": (["generate", "a", "-o", out, "--task", "v2a", "--video", str(short)], "too short (0.312"),
        "v2a missing video": (["generate", "a", "-o", out, "--task", "v2a", "--video", str(tmp / "no.mp4")],
                              "file not found"),  # fmt: skip
        "v2a onto itself": (["generate", "a", "-o", str(good), "--task", "v2a", "--video", str(good)],
                            "is an input file"),  # fmt: skip
        "demo cfg": (["demo", "--cfg", "-1"], "cfg_strength must be a finite number > 0"),
        "demo out-dir a file": (["demo", "--out-dir", str(tmp / "taken.mp4")], "taken.mp4 is a file, not a folder"),
        "demo empty prompt": (["demo", "--prompt", " "], "--prompt is empty: leave --prompt out for the model's demo"),
        "demo huge seed": (["demo", "--seed", "1" + "0" * 25], "--seed: the seed must be an integer from"),
        "generate huge seed": (["generate", "a", "-o", out, "--seed", "-" + "9" * 20], "--seed: the seed must be"),
        "binaural wav output": (["binaural", str(good), "-o", str(tmp / "x.wav")], "must be a .mp4, .m4v or .mov"),
        "binaural zero steps": (["binaural", str(good), "-o", out, "--steps", "0"], "steps must be an integer >= 1"),
        "binaural inf cfg": (["binaural", str(good), "-o", out, "--cfg", "inf"], "cfg_strength must be a finite"),
        "binaural spatialise steps": (["binaural", str(good), "-o", out, "--mode", "spatialise", "--steps", "4"],
                                      "--steps sets the binaural model's sampling, and --mode spatialise"),  # fmt: skip
        "binaural short clip": (["binaural", str(short), "-o", out], "too short (0.312 s); at least 0.5 s"),
        "binaural nothing to spatialise": (["binaural", str(silent), "-o", out, "--mode", "spatialise"],
                                           "no audio track to spatialise"),  # fmt: skip
        "binaural existing": (["binaural", str(good), "-o", str(tmp / "taken.mp4")], "exists; pass --overwrite"),
        "binaural wav suffix": (["binaural", str(good), "-o", out, "--wav", str(tmp / "a.ogg")], "a .wav or .flac"),
        "eval missing ref": (["eval", str(tmp), "--ref", str(tmp / "nothing")], "--ref"),
        "eval json suffix": (["eval", str(tmp), "--json", str(tmp / "scores.txt")], "must be a .json file"),
        "t2a an hour and more": (["t2a", "rain", "-o", str(tmp / "r.wav"), "--duration", "1e9"], "at most 3600 s"),
        "foley past the video": (["foley", str(good), "-o", out, "--duration", "100"],
                                 "video is 1.250 s long, shorter than the asked duration of 100 s"),  # fmt: skip
        "cache nan duration": (["cache", "build", str(tmp / "c"), "--source", "world", "--media", str(tmp),
                                *weights, "--duration", "nan"], "--duration must be at least 0.5 s"),  # fmt: skip
        "cache missing weights": (["cache", "build", str(tmp / "c"), "--source", "world", "--media", str(tmp),
                                   "--clip-weights", str(tmp / "no.safetensors"), *weights[2:]],
                                  "--clip-weights " + str(tmp / "no.safetensors") + ": file not found"),  # fmt: skip
        **{f"{argv[0]} {what} unwritable": (argv, f"{what} {UNWRITABLE}") for what, argv in (
            ("-o", ["generate", "a ball", "-o", f"{UNWRITABLE}/o.mp4"]),
            ("-o", ["t2a", "rain", "-o", f"{UNWRITABLE}/o.wav"]),
            ("-o", ["binaural", str(good), "-o", f"{UNWRITABLE}/o.mp4"]),
            ("--json", ["eval", str(tmp), "--json", f"{UNWRITABLE}/s.json"]),
            ("--report", ["eval", str(tmp), "--report", f"{UNWRITABLE}/report"]),
            ("--out-dir", ["demo", "--out-dir", f"{UNWRITABLE}/demo"]),
            ("--out", ["world", "--n", "4", "--out", f"{UNWRITABLE}/world"]),
            ("out_dir", ["train", str(REPO / "configs" / "toy.yaml"), f"out_dir={UNWRITABLE}/run"]),
            ("OUT", ["cache", "build", f"{UNWRITABLE}/c", "--source", "world", "--media", str(tmp), *weights]),
        )},
    }


def test_bad_inputs_fail_in_one_line_before_any_weights_are_read(tmp_path, monkeypatch, capsys):
    cases = bad_inputs(tmp_path)
    reads = WeightReads(monkeypatch)
    before = listing(tmp_path)
    for name, (argv, message) in cases.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (name, err)
    assert reads.calls == []
    assert listing(tmp_path) == before  # a refused run writes nothing


def test_no_gpu_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is available here")
    reads = WeightReads(monkeypatch)
    assert main(["generate", "a ball", "-o", str(tmp_path / "o.mp4"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no CUDA GPU is available here" in err and "\n" not in err
    assert reads.calls == [] and list(tmp_path.iterdir()) == []


def test_generate_v2a_writes_onto_the_given_video(tmp_path, capsys):
    frames = np.repeat(np.repeat(moving_square(t=14, h=16, w=32), 2, axis=1), 2, axis=2)
    sound = np.random.default_rng(0).uniform(-0.1, 0.1, (2, 48000)).astype(np.float32)
    video = write_video(tmp_path / "in.mp4", frames, 16, sound, 48000)
    out = tmp_path / "out.mp4"
    assert main(["generate", "a ball", "--task", "v2a", "--video", str(video), "--steps", "1", "-o", str(out)]) == 0
    assert "kept as track 2 (--audio keep)" in capsys.readouterr().out
    with av.open(str(out)) as c, av.open(str(video)) as source:
        assert [(s.rate, s.channels) for s in c.streams.audio] == [(SR, 2), (48000, 2)]
        assert [bytes(p) for p in c.demux(c.streams.video[0]) if p.size] == [
            bytes(p) for p in source.demux(source.streams.video[0]) if p.size
        ]
    before = listing(tmp_path)
    assert main(["generate", "a ball", "--task", "v2a", "--video", str(video), "--steps", "1", "-o", str(out)]) == 2
    assert listing(tmp_path) == before  # exists: refused
    assert main(["generate", "a ball", "--task", "v2a", "--video", str(video), "--steps", "1", "-o", str(out),
                 "--audio", "replace", "-y"]) == 0  # fmt: skip
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1


def test_a_run_that_fails_after_replacing_an_output_puts_the_old_file_back(tmp_path, monkeypatch, capsys):
    """`-y` with two outputs: the mp4 is replaced, then the spectrogram fails (a full disk): the user's old mp4 is
    there again, byte for byte, and nothing else is left; a run that succeeds leaves no copy of the old file."""
    from avflow.pipelines.clip import GeneratedClip

    out, png = tmp_path / "mine.mp4", tmp_path / "spec.png"
    out.write_bytes(b"the user's own video")
    argv = ["generate", "a ball", "--steps", "1", "-o", str(out), "--spectrogram", str(png), "-y"]

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(GeneratedClip, "save_spectrogram", full_disk)
        before = listing(tmp_path)
        assert main(argv) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's own video" and listing(tmp_path) == before
    assert main(argv) == 0
    assert out.read_bytes() != b"the user's own video" and sorted(p.name for p in tmp_path.iterdir()) == [
        "mine.mp4", "spec.png"]  # fmt: skip


def test_eval_json_is_checked_first(tmp_path, capsys):
    (tmp_path / "scores.json").write_text(json.dumps({"old": 1}))
    assert main(["eval", str(tmp_path), "--json", str(tmp_path / "scores.json"), "--quiet"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert json.loads((tmp_path / "scores.json").read_text()) == {"old": 1}


def test_experiment_on_a_trained_model_argument_errors_are_one_line(capsys, tmp_path):
    """`avflow experiment NAME --model`: arms that need training, flags that go with training or with --model, a
    missing model folder and a bad prompt file are one-line errors before any model loads."""
    bad = tmp_path / "prompts.json"
    bad.write_text("{}")
    cases = [
        (["experiment", "fusion", "--model", "default"], "only arms that differ in guidance"),
        (["experiment", "guidance", "--nfe", "6"], "--prompts, --nfe and --solver go with --model"),
        (["experiment", "guidance", "--solver", "heun"], "--solver go with --model"),
        (["experiment", "guidance", "--model", "default", "--solver", "dopri5"], "needs a fixed-step solver"),
        (["experiment", "guidance", "--model", "default", "--steps", "3"], "do not apply with --model"),
        (["experiment", "guidance", "--model", str(tmp_path / "nope")], "no such folder"),
        (["experiment", "guidance", "--model", "default", str(tmp_path), "--seeds", "2"], "--seeds goes with one"),
        (["experiment", "guidance", "--model", "default", "default"], "two or more different models"),
        (["experiment", "guidance", "--model", "default", "--prompts", str(bad)], "not a prompt file"),
        # 0 was taken as "not given" (a whole default run started) or as one thread; a file for the output folder
        (["experiment", "fusion", "--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["experiment", "fusion", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["experiment", "fusion", "--threads", "0"], "--threads must be >= 1, got 0"),
        (["experiment", "fusion", "--out", str(bad / "x")], f"{bad} is a file, not a folder"),
        (["experiment", "guidance", "--model", "default", "--out", str(bad)], f"{bad} is a file, not a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_ui_arguments_the_server_would_refuse_are_one_line_errors(tmp_path, capsys):
    """A port out of range and an upload limit the server cannot parse were tracebacks from inside gradio, an output
    folder that is a file an errno; models it could not load: one line each, before gradio is imported (these run
    without the [ui] extra)."""
    taken, gone = tmp_path / "taken.txt", tmp_path / "gone.pth"
    taken.write_text("x")
    cases = {("--port", "70000"): "--port must be from 1 to 65535, got 70000",
             ("--max-file-size", "1.5gb"): "--max-file-size '1.5gb': give a whole number and a unit",
             ("--max-file-size", "abc"): "--max-file-size 'abc': give a whole number and a unit",
             ("--output-dir", str(taken)): f"{taken} is a file, not a folder",
             ("--model", str(tmp_path)): "no config.json here",
             ("--foley-model", "huge_99k"): "unknown model 'huge_99k'",
             ("--foley-weights", str(gone)): f"--foley-weights {gone}: file not found",
             ("--steps", "0"): "--steps and --concurrency must be at least 1"}  # fmt: skip
    for extra, message in cases.items():
        assert main(["ui", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_info_shows_every_readable_file_and_names_the_others(tmp_path, capsys):
    """`avflow info a.mp4 broken.mp4 b.wav`: the readable ones are shown, the other named in one line, exit 2 (the
    first bad file stopped the rest); an MKV's stream line does not claim 0 frames (its header does not count them)."""
    from helpers import with_subtitles

    from avflow.data.media import write_audio

    good = with_subtitles(tmp_path / "a.mkv", "subrip", b"hallo")
    (tmp_path / "broken.mp4").write_text("not a video")
    sound = write_audio(tmp_path / "b.wav", np.zeros((1, SR), np.float32), SR)
    assert main(["info", str(good), str(tmp_path / "broken.mp4"), str(sound)]) == 2
    out, err = capsys.readouterr()
    assert str(good) in out and str(sound) in out and " 0 frames" not in out
    assert err.count("\n") == 1 and "broken.mp4: cannot read as media" in err


def test_download_into_a_cache_it_cannot_write_is_one_line_first(monkeypatch, capsys):
    monkeypatch.setenv("AVFLOW_HOME", UNWRITABLE)
    assert main(["download", "small_16k"]) == 2
    assert f"the weight cache (AVFLOW_HOME) {UNWRITABLE}: cannot write in /proc" in capsys.readouterr().err
