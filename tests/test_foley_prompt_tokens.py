"""A foley prompt or negative prompt longer than the model's CLIP text tower reads (77 tokens for MMAudio) is a
one-line error before any weights are read, in `avflow foley` (one video or a batch), t2a, i2a, the web UI's Foley
tab and the pipeline itself: the CLIP tokenizer would cut it silently."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import WeightReads, listing, sweep_video_frames
from test_foley_cli import model_json  # noqa: F401 (fixture: the tiny foley model's config .json, CLIP context 77)

from avflow.cli import main
from avflow.data.media import write_video
from avflow.encoders.tokenizer import CLIPTokenizer
from avflow.errors import AvflowError
from avflow.models.mmaudio_config import SAMPLING
from avflow.pipelines.foley import FoleyPipeline
from avflow.pipelines.foley_variants import load_model_config
from avflow.ui.services import UISettings, generate_foley

LONG = " ".join(["a red ball bounces on a wooden floor"] * 30)  # 272 CLIP tokens, start and end of text included
TOO_LONG = "is 272 tokens long and this model reads at most 77: shorten it"
REFUSED = f"the prompt {TOO_LONG}"


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """A short video, a .txt list naming it, and an image, in a folder of their own."""
    folder = tmp_path / "in"
    folder.mkdir()
    video = write_video(folder / "clip.mp4", sweep_video_frames(25.0, 0.8), 25.0)
    (folder / "list.txt").write_text("clip.mp4\n")
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "img.png")
    return {"video": video, "list": folder / "list.txt", "image": folder / "img.png"}


def commands(inputs: dict[str, Path], out: Path, model: Path) -> dict[str, list[str]]:
    f = ["--model", str(model), "--steps", "2", "--cfg", "2", "--device", "cpu"]
    return {
        "foley": ["foley", str(inputs["video"]), "-o", str(out / "f.mp4"), *f],
        "foley batch": ["foley", str(inputs["list"]), "-o", str(out / "batch"), *f],
        "i2a": ["i2a", str(inputs["image"]), "-o", str(out / "i.wav"), *f],
    }


@pytest.mark.parametrize("negative", [False, True])
def test_a_long_prompt_is_one_line_before_any_weights(model_json, inputs, tmp_path, monkeypatch, capsys, negative):  # noqa: F811
    out = tmp_path / "out"
    argv = commands(inputs, out, model_json)
    given = ["--prompt", "rain", "--negative-prompt", LONG] if negative else ["--prompt", LONG]
    runs = {name: [*args, *given] for name, args in argv.items()}
    runs["t2a"] = ["t2a", "rain" if negative else LONG, "-o", str(out / "t.wav"), *argv["i2a"][4:],
                   *(["--negative-prompt", LONG] if negative else [])]  # fmt: skip
    reads = WeightReads(monkeypatch)
    before = listing(tmp_path)
    expected = f"--negative-prompt {TOO_LONG}" if negative else REFUSED
    for name, args in runs.items():
        assert main(args) == 2, name
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, (name, err)
    assert reads.calls == []  # the tokenizer alone
    assert listing(tmp_path) == before  # nothing written


def test_the_limit_is_the_model_s_clip_context_length(model_json, tmp_path):  # noqa: F811
    from avflow.pipelines.foley import check_prompt_lengths, check_prompts

    spec = load_model_config(model_json)
    assert spec.clip_config.text.context_length == 77
    check_prompts(spec, " ".join(["a"] * 75))  # 75 + start and end of text: exactly 77, taken whole
    with pytest.raises(AvflowError, match="the prompt is 78 tokens long and this model reads at most 77"):
        check_prompts(spec, " ".join(["a"] * 76))
    data = json.loads(model_json.read_text())
    data["clip_config"]["text"]["context_length"] = 16
    short = model_json.parent / "short_context.json"
    short.write_text(json.dumps(data))
    with pytest.raises(AvflowError, match="the prompt is 22 tokens long and this model reads at most 16"):
        check_prompts(load_model_config(short), " ".join(["a"] * 20))
    with pytest.raises(AvflowError, match="^the negative prompt is 22 tokens"):
        check_prompt_lengths(16, "rain", " ".join(["a"] * 20))


def test_the_ui_foley_tab_refuses_a_long_prompt_before_any_model(model_json, inputs, tmp_path, monkeypatch):  # noqa: F811
    settings = UISettings(steps=1, output_dir=tmp_path / "ui", foley_model=str(model_json))
    reads = WeightReads(monkeypatch)
    for prompt, negative, message in ((LONG, "", f"^{REFUSED}"), ("rain", LONG, f"^the negative prompt {TOO_LONG}")):
        with pytest.raises(AvflowError, match=message) as err:
            generate_foley(inputs["video"], prompt, settings, negative_prompt=negative, cfg_strength=2.0)
        assert "\n" not in str(err.value)
    assert reads.calls == []
    assert not (tmp_path / "ui").exists() or not any((tmp_path / "ui").rglob("*.mp4"))


def test_the_pipeline_refuses_a_long_prompt_instead_of_cutting_it(inputs):
    """Checked with the pipeline's own tokenizer before anything else runs: here a pipeline of nothing else."""
    model, encoders = SimpleNamespace(sampling=SAMPLING), SimpleNamespace(tokenizer=CLIPTokenizer())
    pipeline = FoleyPipeline(model, encoders)
    with pytest.raises(AvflowError, match=f"^{REFUSED}"):
        pipeline.generate_text(LONG, duration=0.5)
    with pytest.raises(AvflowError, match=f"^negative_prompt {TOO_LONG}"):
        pipeline.generate_video(inputs["video"], "rain", LONG)
    with pytest.raises(AvflowError, match=f"^{REFUSED}"):
        pipeline.generate_image(inputs["image"], LONG, duration=0.5)
