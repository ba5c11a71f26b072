"""scripts/model_card_metrics.py and its measures: world clips pass the targets, a blank video scores nothing, and the
script runs end to end on a tiny untrained v2 model."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
from helpers import REPO, write_tiny_default_model

from avflow.eval.measure import Measure
from avflow.eval.prompt_checks import parse_prompt
from avflow.eval.prompt_measures import UNMATCHED_MS, measure_prompt_clip
from avflow.eval.prompt_targets import TARGETS, score
from avflow.world.dataset import make_clip
from avflow.world.scene import WorldConfig

WORLD = WorldConfig(width=64, height=64, fps=16, duration=2.0, sample_rate=16000, min_objects=1, max_objects=2)
PROMPTS = json.loads((REPO / "configs" / "model_card_prompts.json").read_text())


def card_script(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # it imports train_default_v2 beside it
    spec = importlib.util.spec_from_file_location("model_card_metrics", REPO / "scripts" / "model_card_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_held_out_prompts_file():
    """>= 32 prompts, seed i for prompt i, one-object prompts on every side, two-object prompts, all distinct."""
    rows = PROMPTS["prompts"]
    assert len(rows) >= 32 and [r["seed"] for r in rows] == list(range(len(rows)))
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert sum(r["objects"] == 2 for r in rows) >= 8 and PROMPTS["training"]["scenes_compared"] >= 6000
    sides = [parse_prompt(r["prompt"])[0].side for r in rows if r["objects"] == 1]
    assert all(sides.count(side) >= 8 for side in ("left", "middle", "right"))


@pytest.mark.parametrize("row", PROMPTS["prompts"][:3] + PROMPTS["prompts"][-2:], ids=lambda r: r["id"])
def test_world_clip_of_a_held_out_prompt_passes_every_check(row):
    """The prompt's own world scene: shown where named, loud, each contact within a frame of a floor impact and of
    an onset, the ILD on the object's side at most onsets."""
    clip = make_clip(row["world_seed"], WORLD)
    assert clip.meta["caption"] == row["prompt"]
    m = measure_prompt_clip(row["prompt"], clip.frames, 16, clip.audio, 16000)
    checks = m.checks()
    assert all(ok is not False for ok in checks.values()), checks
    floor = np.array([e["time"] for e in clip.meta["events"] if e["surface"] == "floor"])
    assert m.pairs and all(np.abs(floor - p.contact).min() < 1 / 16 for p in m.pairs)
    assert np.median([p.error_ms for p in m.pairs]) < 20
    agrees = [p.agrees for p in m.pairs if p.agrees is not None]
    assert np.mean(agrees) >= 0.75  # two objects: an onset may be the other object's, or both objects' at once


def test_ground_truth_targets_met_on_world_clips():
    """Twelve world scenes (not the prompt file's): every target met, the sync median within a few ms."""
    clips = []
    for seed in range(12):
        clip = make_clip(10_000 + seed, WORLD)
        clips.append(measure_prompt_clip(clip.meta["caption"], clip.frames, 16, clip.audio, 16000))
    results = {r.target.name: r for r in score(clips)}
    assert set(results) == {t.name for t in TARGETS}
    assert all(r.met and r.n > 0 for r in results.values()), {k: (r.value, r.n) for k, r in results.items()}
    assert results["sync"].value < 10


def test_blank_video_and_silent_audio_are_undefined_with_reasons():
    clip = make_clip(7, WORLD)
    prompt = clip.meta["caption"]
    blank = np.full_like(clip.frames, 40)
    m = measure_prompt_clip(prompt, blank, 16, clip.audio, 16000)
    values = m.values()
    for name in ("object0_shown", "object0_mean_x", "object0_contacts", "sync_median_ms", "side_agreement"):
        assert not values[name].defined and "blank video" in values[name].reason
    assert values["peak_dbfs"].defined and m.checks()["sound"]
    checks = m.checks()
    assert checks["contact"] is False and checks["count"] in (False, None)
    assert all(not r.met for r in score([m], ("sync", "space")))  # nothing measured is never met
    silent = measure_prompt_clip(prompt, clip.frames, 16, np.zeros_like(clip.audio), 16000)
    assert silent.values()["peak_dbfs"] == Measure.undefined("silent audio") and not silent.checks()["sound"]
    assert all(p.error_ms == UNMATCHED_MS for p in silent.pairs) and silent.pairs


def test_audio_on_the_wrong_side_and_late_fails():
    """The same clip with swapped ears fails space; delayed by 200 ms its median sync error is about 200 ms."""
    for seed in range(50):
        clip = make_clip(seed, WORLD)
        if len(clip.meta["objects"]) == 1 and clip.meta["objects"][0]["side"] != "middle":
            break
    good = measure_prompt_clip(clip.meta["caption"], clip.frames, 16, clip.audio, 16000)
    swapped = measure_prompt_clip(clip.meta["caption"], clip.frames, 16, clip.audio[::-1], 16000)
    assert score([good], ("space",))[0].value == 1.0 and score([swapped], ("space",))[0].value == 0.0
    late = np.concatenate([np.zeros((2, 3200), np.float32), clip.audio[:, :-3200]], axis=1)
    errors = [p.error_ms for p in measure_prompt_clip(clip.meta["caption"], clip.frames, 16, late, 16000).pairs]
    assert len(errors) >= 2 and 150 < np.median(errors) <= UNMATCHED_MS  # a later bounce may lie nearer


def test_held_out_prompts_are_not_training_captions_of_a_world(tmp_path, monkeypatch):
    """--train-world checks the prompts against a world's training captions: one equal caption is a one-line
    error."""
    script = card_script(monkeypatch)
    rows = PROMPTS["prompts"][:2]
    world = tmp_path / "world" / "train"
    world.mkdir(parents=True)
    (world / "manifest.jsonl").write_text(json.dumps({"id": "train_000000", "caption": "a red ball"}) + "\n")
    assert "no prompt is one of the 1 training captions" in script.check_held_out(rows, tmp_path / "world", PROMPTS)
    (world / "manifest.jsonl").write_text(json.dumps({"id": "x", "caption": rows[1]["prompt"]}) + "\n")
    with pytest.raises(Exception, match="p01 are training captions"):
        script.check_held_out(rows, tmp_path / "world", PROMPTS)


def test_combination_rule_compares_what_the_caption_says(monkeypatch):
    """The held-out rule's combination of a one-object scene is the colour, shape, side and count its caption names."""
    script = card_script(monkeypatch)
    checked = 0
    for seed in range(30):
        meta = script.scene_meta(seed)
        key = script.combination(meta)
        if key[0] != "one":
            assert len(parse_prompt(meta["caption"])) == 2
            continue
        (named,) = parse_prompt(meta["caption"])
        _, colour, _, shape, side, count = key
        assert (named.colour, named.shape, named.side, named.bouncing) == (colour, shape, side, count != "0")
        assert named.bounces == (int(count) if count in "123" else None)
        checked += 1
    assert checked >= 5


def test_script_end_to_end_on_a_tiny_untrained_model(tmp_path, monkeypatch, capsys):
    script = card_script(monkeypatch)
    model = write_tiny_default_model(tmp_path / "model")
    out = tmp_path / "card.json"
    assert script.main(["--model", str(model), "--n", "2", "--io-clips", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## t2av: targets vs measured" in printed and "| object |" in printed and "## v2a" in printed
    result = json.loads(out.read_text())
    assert result["mode"] == "model" and [c["seed"] for c in result["clips"]] == [0, 1]
    assert result["precision"] == "auto" and "precision auto" in printed
    assert [t["name"] for t in result["targets"]] == [t.name for t in TARGETS]
    assert {k: len(v) for k, v in result["io_clips"].items()} == {"a2v": 1, "v2a": 1}
    assert all(c["values"]["peak_dbfs"]["value"] is not None or c["values"]["peak_dbfs"]["reason"]
               for c in result["clips"])  # fmt: skip
    assert script.main(["--model", str(tmp_path / "nothing"), "--n", "1"]) == 2
    assert "nothing: model files missing: " in capsys.readouterr().err
    # --seeds: each prompt with its seed + 1000 k, the table pooled over every clip, a line per seed offset
    assert script.main(["--model", str(model), "--n", "2", "--seeds", "2", "--io-clips", "0", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 prompts, 2 seeds each, pooled" in printed
    assert re.search(r"Per seed offset: \+0: object (\d+%|not measurable \(n = 0\)), object_side ", printed)
    pooled = json.loads(out.read_text())
    assert [c["seed"] for c in pooled["clips"]] == [0, 1, 1000, 1001]
    assert pooled["per_seed"]["0"] == result["targets"]  # the first offset's clips are the one-seed run's
    n = {t["name"]: t["n"] for t in pooled["targets"]}
    assert all(n[t["name"]] == t["n"] + u["n"] for t, u in zip(pooled["per_seed"]["0"], pooled["per_seed"]["1000"]))
    # --precision reaches the pipeline and the record
    assert script.main(["--model", str(model), "--n", "1", "--io-clips", "0", "--precision", "bf16",
                        "--json", str(out)]) == 0  # fmt: skip
    assert json.loads(out.read_text())["precision"] == "bf16" and "precision bf16" in capsys.readouterr().out
    assert script.main(["--model", str(model), "--n", "1", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert script.main(["--ground-truth", "--n", "1", "--seeds", "2"]) == 2
    assert "1 with --ground-truth" in capsys.readouterr().err


def test_tuning_prompt_set_shares_nothing_with_the_card(tmp_path, monkeypatch, capsys):
    """--make-prompts with another file and --held-out-base: seeds from that base, no combination of the card's
    prompts, and a base inside the splits' seed range is a one-line error."""
    script = card_script(monkeypatch)
    from avflow.world.dataset import clip_seed, split_sizes

    world = tmp_path / "world" / "train"
    world.mkdir(parents=True)
    for i in range(split_sizes(10)["train"]):
        meta = script.scene_meta(clip_seed("train", script.training.WORLD_SEED, i))
        (world / f"train_{i:06d}.json").write_text(json.dumps(meta))
    out, base = tmp_path / "tune.json", 4 << 40
    args = ["--make-prompts", "--prompts", str(out), "--clips", "10", "--train-world", str(tmp_path / "world")]
    assert script.main([*args, "--held-out-base", str(base), "--singles", "3", "--twos", "1"]) == 0
    tune = json.loads(out.read_text())
    assert tune["held_out_seed_base"] == base and [r["objects"] for r in tune["prompts"]] == [1, 1, 1, 2]
    assert all(r["world_seed"] >= base for r in tune["prompts"])
    card = {script.combination(script.scene_meta(r["world_seed"])) for r in PROMPTS["prompts"]}
    assert not card & {script.combination(script.scene_meta(r["world_seed"])) for r in tune["prompts"]}
    assert script.main([*args, "--held-out-base", "5"]) == 2
    assert "--held-out-base must be >=" in capsys.readouterr().err
