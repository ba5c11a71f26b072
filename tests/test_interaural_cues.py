"""Interaural cue streams (`avflow.data.interaural_cues`) and the binaural model's `cues` representation: the
cues of a pair rendered back onto its mono, mirror symmetry, the model config, export and pipeline (random tiny
weights: nothing here needs a trained model)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from avflow.data import interaural_cues as ic
from avflow.errors import ConfigError, MediaError, WeightsError
from avflow.eval.side import CueConfig, ild_at, itd_at
from avflow.flow.loss import flow_matching_loss
from avflow.models.binaural import CUE_STREAM, BinauralConfig, BinauralFlow, load_binaural, save_binaural
from avflow.pipelines.binaural import BinauralPipeline
from avflow.train.binaural_task import BinauralFlowConfig, BinauralFlowTask
from avflow.world.binaural import fractional_delay

SR = 16000


def bursts(ild_db: float, itd_s: float, seconds: float = 1.0, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """[left, right] (2, S): decaying noise bursts every 0.25 s in quiet noise, the left ear `ild_db` louder and
    leading by `itd_s` (negative: the right); and the burst times."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    src = np.zeros(n)
    times = [0.1 + 0.25 * k for k in range(int((seconds - 0.1) / 0.25))]
    for t in times:
        i = int(t * SR)
        m = min(n - i, 2000)
        src[i : i + m] += rng.standard_normal(m) * np.exp(-np.arange(m) / 400.0) * 0.3
    g = 10 ** (ild_db / 40)
    left = g * fractional_delay(src, np.full(n, max(-itd_s, 0.0) * SR))
    right = fractional_delay(src, np.full(n, max(itd_s, 0.0) * SR)) / g
    noise = rng.standard_normal((2, n)) * 1e-4
    return (np.stack([left, right]) + noise).astype(np.float32), times


@pytest.mark.parametrize("ild_db, itd_s", [(6.0, 3e-4), (-4.0, -5e-4), (0.0, 0.0)])
def test_cues_rendered_onto_the_mono_keep_the_pair_s_ild_and_itd(ild_db: float, itd_s: float):
    """At each burst (18 ms window, as the benchmark measures): ILD within 0.3 dB and ITD within 10 µs of the pair's;
    the output's mix is the mono within 1 % of its peak (exact but where the ears are nearly opposite in phase, at
    the |D| floor of `apply_cues`)."""
    pair, times = bursts(ild_db, itd_s)
    mono = pair.mean(0)
    cues = ic.encode(pair, CUE_STREAM)
    assert cues.shape == (2, CUE_STREAM.tokens(pair.shape[1]), CUE_STREAM.dim) and cues.dtype == np.float32
    out = ic.decode(mono, cues, CUE_STREAM)
    assert out.shape == pair.shape and np.abs(out.mean(0) - mono).max() < 1e-2 * np.abs(mono).max()
    cfg = CueConfig()
    for t in times:
        want_ild, got_ild = ild_at(pair, SR, t, cfg).value, ild_at(out, SR, t, cfg).value
        want_itd, got_itd = itd_at(pair, SR, t, cfg).value, itd_at(out, SR, t, cfg).value
        assert abs(got_ild - want_ild) < 0.3, (t, got_ild, want_ild)
        assert abs(got_itd - want_itd) < 10.0, (t, got_itd, want_itd)  # µs
    lead_ms = cues[0, :, -1] / CUE_STREAM.lead_scale  # the burst tokens' lead is half the ITD
    loud = ic.mono_features(mono, CUE_STREAM)[:, -1].argmax()
    assert abs(lead_ms[loud] - 1e3 * itd_s / 2) < 0.01


def test_swapped_ears_swap_the_streams_and_the_mono_features_see_the_sound():
    pair, times = bursts(5.0, 4e-4, seed=1)
    cues, swapped = ic.encode(pair, CUE_STREAM), ic.encode(pair[::-1].copy(), CUE_STREAM)
    np.testing.assert_allclose(swapped[0], cues[1], atol=1e-4)
    np.testing.assert_allclose(swapped[1], cues[0], atol=1e-4)
    feats = ic.mono_features(pair.mean(0), CUE_STREAM)
    burst_tokens = {int(t * CUE_STREAM.token_rate) for t in times}
    quiet = [k for k in range(feats.shape[0]) if all(abs(k - b) > 2 for b in burst_tokens)]
    assert min(feats[b, -1] for b in burst_tokens) > max(feats[quiet, -1]) + 2  # > 20 dB louder at the bursts


def test_bad_shapes_and_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="pair"):
        ic.encode(np.zeros((3, 100)), CUE_STREAM)
    with pytest.raises(ConfigError, match="decode needs"):
        ic.decode(np.zeros(1000), np.zeros((2, 4, 5)), CUE_STREAM)
    with pytest.raises(ConfigError, match="bands"):
        ic.CueStreamConfig(bands=0)
    with pytest.raises(ConfigError, match="representation"):
        BinauralConfig(representation="pixels")
    with pytest.raises(ConfigError, match="channels per ear"):
        BinauralConfig(representation="cues", latent_dim=8)


def tiny_cue_model(seed: int = 0, prior: str = "none") -> BinauralFlow:
    torch.manual_seed(seed)
    model = BinauralFlow(BinauralConfig(latent_dim=CUE_STREAM.dim, dim=32, depth=1, heads=2, bins=8,
                                        representation="cues", prior=prior))  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return model.eval()


def test_cue_model_export_records_its_settings(tmp_path):
    from avflow.flow.sampling import SamplingConfig
    from avflow.models.binaural import SAMPLING, binaural_sampling

    path = tmp_path / "cues.safetensors"
    save_binaural(tiny_cue_model(), path, sampling=SamplingConfig(steps=7, cfg_strength=1.0), draws=5)
    model, checksum = load_binaural(path)
    assert model.config.representation == "cues" and checksum == ""
    own, pipe = binaural_sampling(path), BinauralPipeline.from_assets(path)
    assert (own.steps, own.cfg_strength) == (7, 1.0) and pipe.sampling == own and pipe.draws == 5
    save_binaural(tiny_cue_model(), tmp_path / "plain.safetensors")
    assert binaural_sampling(tmp_path / "plain.safetensors") == SAMPLING
    assert BinauralPipeline.from_assets(tmp_path / "plain.safetensors").draws == 1
    from avflow.weights import read_safetensors, save_safetensors

    tensors, meta = read_safetensors(path)
    meta["cue_stream"] = json.dumps(json.loads(meta["cue_stream"]) | {"bands": 15})
    save_safetensors(tensors, tmp_path / "other.safetensors", metadata=meta)
    with pytest.raises(WeightsError, match="other cue settings"):
        load_binaural(tmp_path / "other.safetensors")


def test_cue_pipeline_places_the_given_mono_and_needs_one():
    from test_binaural import moving_square

    pipe = BinauralPipeline(tiny_cue_model())
    assert pipe.needs_mono
    mono = bursts(0.0, 0.0, seconds=0.75)[0].mean(0)
    out = pipe.generate(moving_square(t=12), 16.0, mono.shape[0], mono=mono, seed=0,
                        sampling=pipe.sampling.override(steps=2))  # fmt: skip
    assert out.shape == (2, mono.shape[0]) and np.isfinite(out).all()
    assert np.corrcoef(out.mean(0), mono)[0, 1] > 0.9  # the mix is the mono (random cues: up to the |D| floor)
    assert np.abs(out[0] - out[1]).max() > 1e-3  # and the ears differ
    with pytest.raises(MediaError, match="give it a mono"):
        pipe.generate(moving_square(t=12), 16.0, mono.shape[0], seed=0)
    with pytest.raises(WeightsError, match="needs the world audio codec"):
        BinauralPipeline(BinauralFlow(BinauralConfig(latent_dim=8, dim=32, depth=1, heads=2, bins=8)))


def test_draws_average_the_cue_streams_of_one_batch():
    """draws = k: the streams of k draws (one batch, noise from the seed) averaged before rendering; checked against
    the same k draws made one by one with that batch's noise."""
    from test_binaural import moving_square

    from avflow.flow.sampling import sample_with

    model, frames = tiny_cue_model(seed=4), moving_square(t=12)
    mono = bursts(0.0, 0.0, seconds=0.75)[0].mean(0)
    sampling = BinauralPipeline(model).sampling.override(steps=2, cfg_strength=1.0)
    out = BinauralPipeline(model, draws=3).generate(frames, 16.0, mono.shape[0], mono=mono, seed=5, sampling=sampling)
    one = BinauralPipeline(model)
    n = one.n_tokens(mono.shape[0])
    cond = one.conditions(frames, 16.0, n, mono)
    g = torch.Generator().manual_seed(5)
    noise = {s: torch.randn(3, n, CUE_STREAM.dim, generator=g) for s in ("left", "right")}
    draws = [{s: x[i : i + 1] for s, x in noise.items()} for i in range(3)]
    streams = [sample_with(sampling, model, d, cond).streams for d in draws]
    mean = torch.stack([torch.cat([d["left"], d["right"]]) for d in streams]).mean(0).numpy()  # (2, N, C)
    np.testing.assert_allclose(out, ic.decode(mono, mean, CUE_STREAM), atol=1e-5)
    single = one.generate(frames, 16.0, mono.shape[0], mono=mono, seed=5, sampling=sampling)
    assert np.abs(out - single).max() > 1e-4
    with pytest.raises(WeightsError, match="only a cue model averages draws"):
        BinauralPipeline(BinauralFlow(BinauralConfig(latent_dim=8, dim=32, depth=1, heads=2, bins=8)), codec=object(),
                         draws=2)  # fmt: skip


def test_cue_cache_and_its_checks(tmp_path):
    from test_binaural import tiny_world

    from avflow.train.binaural_cache import cache_world_split, check_cache
    from avflow.train.datasets import TensorFile, TensorFileConfig

    world = tiny_world(tmp_path / "world", seconds=0.5)
    out = cache_world_split(world, "train", tmp_path / "c.safetensors", None, bins=8, representation="cues")
    item = TensorFile(TensorFileConfig(file=str(out)))[0]
    n = CUE_STREAM.tokens(int(0.5 * SR))
    assert item["streams"]["left"].shape == (n, CUE_STREAM.dim) == item["cond"]["mono"].shape
    assert check_cache(out, None, "cues")["representation"] == "cues"
    with pytest.raises(ConfigError, match="not 'codec'"):
        check_cache(out, None, "codec")
    import avflow.train.binaural_cache as bc

    bc_cue, bc.CUE_STREAM = bc.CUE_STREAM, replace(CUE_STREAM, bands=15)
    try:
        with pytest.raises(ConfigError, match="other cue stream settings"):
            check_cache(out, None, "cues")
    finally:
        bc.CUE_STREAM = bc_cue


def test_cli_with_a_cue_model_and_no_mono_places_the_default_model_s_v2a_sound(tmp_path, monkeypatch, capsys):
    """Task 1 for a cue-stream model: the sound is the default joint model's v2a output for the video (here a
    stand-in, so no joint model is loaded), placed by the model; the track is the video's length."""
    from test_binaural import _inputs

    from avflow.cli import main
    from avflow.data.media import probe, read_audio
    from avflow.models import binaural
    from avflow.pipelines import binaural as pipeline_module

    monkeypatch.setattr(binaural, "MODEL_FILE", tmp_path / "in.mp4")  # "installed": a file exists there
    monkeypatch.setattr(BinauralPipeline, "from_assets", classmethod(lambda cls, *a, **k: cls(tiny_cue_model())))
    calls = []

    def fake_v2a(video, n_samples, seed=0, joint=None, progress=None):
        calls.append((str(video), n_samples, seed))
        return bursts(0.0, 0.0, seconds=n_samples / SR)[0].mean(0)[:n_samples]

    monkeypatch.setattr(pipeline_module, "v2a_mono", fake_v2a)
    src, _ = _inputs(tmp_path)
    out = tmp_path / "out.mp4"
    assert main(["binaural", str(src), "-o", str(out), "--mode", "model", "--steps", "2", "--seed", "3"]) == 0
    assert len(calls) == 1 and calls[0][0] == str(src) and calls[0][2] == 3
    audio, sr = read_audio(out)
    assert audio.shape[0] == 2 and abs(audio.shape[1] / sr - probe(src).duration) < 1e-3
    assert (audio[0] - audio[1]).abs().max().item() > 1e-3


def test_prior_is_a_per_ear_video_condition_of_cue_models_only():
    """The spatialiser prior: per ear (mirrored video + swapped prior = swapped ears, to float summation order,
    atol = rtol = 1e-5), read only with the video (video_on = 0 ignores it), and a cue model's option only."""
    from test_binaural import conditions, moving_square

    with pytest.raises(ConfigError, match="needs the cues representation"):
        BinauralConfig(prior="spatialiser")
    with pytest.raises(ConfigError, match="prior must be one of"):
        BinauralConfig(representation="cues", latent_dim=CUE_STREAM.dim, prior="pan")
    model, n, c = tiny_cue_model(seed=3, prior="spatialiser"), 10, CUE_STREAM.dim
    g = torch.Generator().manual_seed(1)
    a, b, mono, prior = (torch.randn(1, *shape, generator=g) for shape in ((n, c), (n, c), (n, c), (2, n, c)))
    frames = moving_square(side="left", seed=2)
    t = {"left": torch.tensor([0.4]), "right": torch.tensor([0.4])}
    cond = conditions(frames, n, mono) | {"prior": prior}
    mirrored = conditions(frames[:, :, ::-1].copy(), n, mono) | {"prior": prior.flip(1)}
    with torch.no_grad():
        out = model.velocity({"left": a, "right": b}, t, cond)
        mir = model.velocity({"left": b, "right": a}, t, mirrored)
        other = model.velocity({"left": a, "right": b}, t, cond | {"prior": -prior})
        off = [model.velocity({"left": a, "right": b}, t, cond | {"prior": p, "video_on": torch.zeros(1)})
               for p in (prior, -prior)]  # fmt: skip
    torch.testing.assert_close(mir["left"], out["right"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mir["right"], out["left"], atol=1e-5, rtol=1e-5)
    assert (other["left"] - out["left"]).abs().max() > 1e-3  # the prior is read
    torch.testing.assert_close(off[0]["left"], off[1]["left"], atol=0, rtol=0)  # but not without the video
    assert model.empty_conditions(2, n)["prior"].shape == (2, 2, n, c)


def test_prior_cache_holds_the_renderer_s_cue_streams_for_any_number_of_workers(tmp_path):
    from test_binaural import tiny_world

    from avflow.pipelines.spatialise import spatialise
    from avflow.train.binaural_cache import cache_world_split, check_cache
    from avflow.weights import read_safetensors
    from avflow.world.dataset import load_clip

    world = tiny_world(tmp_path / "world", seconds=0.5, clips=3)
    files = [cache_world_split(world, "train", tmp_path / f"w{k}.safetensors", None, bins=8, representation="cues",
                               prior="spatialiser", render_prior=spatialise, workers=k) for k in (1, 2)]  # fmt: skip
    (one, meta), (two, _) = (read_safetensors(f) for f in files)
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    clip = load_clip(world / "train" / "c1")
    n = CUE_STREAM.tokens(clip.audio.shape[-1])
    expected = ic.rendered_streams(spatialise, clip.audio.astype(np.float64).mean(0), clip.frames,
                                   float(clip.meta["fps"]), CUE_STREAM, n)  # fmt: skip
    assert one["cond.prior"].shape == (3, 2, n, CUE_STREAM.dim) and meta["prior"] == "spatialiser"
    torch.testing.assert_close(one["cond.prior"][1], expected)
    assert check_cache(files[0], None, "cues", "spatialiser")["prior"] == "spatialiser"
    with pytest.raises(ConfigError, match="made with prior 'spatialiser', the model asks 'none'"):
        check_cache(files[0], None, "cues", "none")
    with pytest.raises(ConfigError, match="its name and its renderer"):
        cache_world_split(world, "train", tmp_path / "x.safetensors", None, representation="cues", prior="spatialiser")


def test_prior_pipeline_renders_the_spatialiser_s_cues_as_its_condition(monkeypatch):
    from test_binaural import moving_square

    import avflow.pipelines.binaural as pb

    pipe = BinauralPipeline(tiny_cue_model(prior="spatialiser"))
    mono = bursts(0.0, 0.0, seconds=0.75)[0].mean(0)
    frames, sampling = moving_square(t=12), pipe.sampling.override(steps=2)
    seen = []
    real = pb.BinauralPipeline.conditions

    def spy(self, frames, fps, n, mono, prior=None):
        seen.append(prior)
        return real(self, frames, fps, n, mono, prior)

    monkeypatch.setattr(pb.BinauralPipeline, "conditions", spy)
    out = pipe.generate(frames, 16.0, mono.shape[0], mono=mono, seed=0, sampling=sampling)
    assert out.shape == (2, mono.shape[0]) and np.isfinite(out).all()
    n = pipe.n_tokens(mono.shape[0])
    expected = ic.rendered_streams(pb.spatialise, mono, frames, 16.0, CUE_STREAM, n)
    torch.testing.assert_close(seen[0], expected)
    with pytest.raises(MediaError, match="give conditions\\(\\) its prior"):
        real(pipe, frames, 16.0, n, mono)


@pytest.mark.slow
def test_training_script_caches_trains_and_exports_a_model_with_the_spatialiser_prior(tmp_path):
    """`scripts/train_binaural_v2.py --config configs/binaural_cues_prior.yaml` end to end at toy size: the cache
    holds the prior, the export records the residual model; a rerun without the prior refuses the cache, and a config
    of another representation is refused, each in one line."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from test_binaural import tiny_world

    repo = Path(__file__).resolve().parents[1]
    world = tiny_world(tmp_path / "world", seconds=0.5, clips=2)
    shutil.copytree(world / "train", world / "val")
    work = tmp_path / "work"
    small = ["train.steps=2", "train.batch_size=2", "log.every=1", "log.val_every=2", "log.val_batches=1",
             "checkpoint.every=2", "model.args.dim=32", "model.args.depth=1", "model.args.heads=2"]  # fmt: skip
    script = [sys.executable, str(repo / "scripts" / "train_binaural_v2.py"), "--world", str(world), "--work",
              str(work), "--workers", "1"]  # fmt: skip
    prior_config = ["--config", str(repo / "configs" / "binaural_cues_prior.yaml")]
    done = subprocess.run([*script, "--representation", "cues", *prior_config, *small], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    pipe = BinauralPipeline.from_assets(work / "seed0" / "binaural.safetensors")
    assert pipe.model.config.prior == "spatialiser" and pipe.model.config.residual and pipe.draws == 16
    trained = (work / "seed0" / "config.yaml").read_text()
    assert "lead_weight: 4.0" in trained and "event_weight: 4.0" in trained
    for args, message in (
        (["--representation", "cues", "--stage", "cache"], "made with prior 'spatialiser', the model asks 'none'"),
        (["--representation", "codec", *prior_config, "--stage", "train"], "not 'codec' (--representation)"),
    ):
        again = subprocess.run([*script, *args, *small], capture_output=True, text=True)
        assert again.returncode != 0 and message in again.stderr, again.stderr[-2000:]
        assert len(again.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_residual_model_is_the_same_network_on_the_difference_from_the_prior():
    """residual: v(x_t, t) = v_net(x_t - t p, t) + p per ear (the flow of x_t = a_t x0 + t x1 rewritten for r = x - p),
    the plain network where the video (and with it the prior) is off; exact up to float order (atol 1e-6)."""
    from test_binaural import conditions, moving_square

    with pytest.raises(ConfigError, match="set prior too"):
        BinauralConfig(representation="cues", latent_dim=CUE_STREAM.dim, residual=True)
    plain = tiny_cue_model(seed=5, prior="spatialiser")
    residual = BinauralFlow(BinauralConfig(**{**vars(plain.config), "residual": True})).eval()
    residual.load_state_dict(plain.state_dict())
    n, c = 8, CUE_STREAM.dim
    g = torch.Generator().manual_seed(2)
    x = {s: torch.randn(2, n, c, generator=g) for s in ("left", "right")}
    prior = torch.randn(2, 2, n, c, generator=g)
    t = {s: torch.tensor([0.2, 0.7]) for s in x}
    cond = {k: torch.cat([v, v]) for k, v in conditions(moving_square(), n, torch.randn(1, n, c)).items()}
    cond |= {"prior": prior, "video_on": torch.tensor([1.0, 0.0])}
    with torch.no_grad():
        got = residual.velocity(x, t, cond)
        shifted = {s: x[s] - t[s].view(-1, 1, 1) * prior[:, i] * cond["video_on"].view(-1, 1, 1)
                   for i, s in enumerate(("left", "right"))}  # fmt: skip
        want = plain.velocity(shifted, t, cond)
    for i, s in enumerate(("left", "right")):
        torch.testing.assert_close(got[s][0], want[s][0] + prior[0, i], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got[s][1], want[s][1], atol=1e-6, rtol=1e-6)  # video off: no prior


def test_weighted_loss_is_the_weighted_mean_of_the_counted_elements():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    mask = torch.rand(3, 5, 1, generator=g) > 0.3
    weight = torch.rand(3, 5, 4, generator=g) * 3
    err = (pred - target).square()
    m = mask.expand_as(err).float() * weight
    expected = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    torch.testing.assert_close(flow_matching_loss(pred, target, mask, weight), expected)
    torch.testing.assert_close(flow_matching_loss(pred, target, mask, torch.full((3, 1, 1), 7.0)),
                               flow_matching_loss(pred, target, mask))  # fmt: skip
    assert flow_matching_loss(pred, target, mask, torch.zeros(3, 5, 4)).eq(0).all()


def test_binaural_task_weighs_the_lead_column_and_the_mono_s_rises():
    """lead_weight on each ear's last column; tokens where the mono's broadband level (its last feature, in 10 dB)
    rises weigh 1 + event_weight x rise (rise clamped to [0, 2]); a codec model refuses both, in one line."""
    n, c = 6, CUE_STREAM.dim
    level = torch.tensor([[0.0, 0.0, 1.0, 0.5, 3.5, 3.4]])  # rises 0, 0, 1, 0, 3 -> 2, 0
    mono = torch.zeros(1, n, c)
    mono[..., -1] = level
    batch = {"streams": {"left": torch.zeros(1, n, c), "right": torch.zeros(1, n, c)}, "cond": {"mono": mono}}
    task = BinauralFlowTask(BinauralFlowConfig(lead_weight=4.0, event_weight=3.0))
    weights = task.element_weights(tiny_cue_model(), batch)
    tokens = torch.tensor([1.0, 1.0, 4.0, 1.0, 7.0, 1.0])
    torch.testing.assert_close(weights["left"][0, :, 0], tokens)
    torch.testing.assert_close(weights["right"][0, :, -1], 4.0 * tokens)
    assert BinauralFlowTask(BinauralFlowConfig()).element_weights(tiny_cue_model(), batch) == {}
    codec_model = BinauralFlow(BinauralConfig(latent_dim=8, dim=32, depth=1, heads=2, bins=8))
    with pytest.raises(ConfigError, match="need model.args.representation=cues"):
        task.element_weights(codec_model, batch)
    for bad in ({"lead_weight": 0.0}, {"event_weight": -1.0}, {"event_weight": float("nan")}):
        with pytest.raises(ConfigError):
            BinauralFlowConfig(**bad)


def test_weighted_binaural_loss_is_the_weighted_mean_over_both_ears():
    """`FlowMatchingTask.loss` with the binaural weights: per sample and ear the weighted mean squared error of the
    model's velocity, then the mean over ears and samples."""
    from test_binaural import conditions, moving_square

    from avflow.flow.loss import noised_streams

    model, n, c = tiny_cue_model(seed=1), 8, CUE_STREAM.dim
    g = torch.Generator().manual_seed(2)
    mono = torch.randn(2, n, c, generator=g)
    mono[..., -1] = torch.tensor([0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.5, 2.0])
    cond = {k: torch.cat([v, v]) for k, v in conditions(moving_square(), n).items()}
    cond |= {"mono": mono, "mono_on": torch.ones(2)}
    batch = {"streams": {s: torch.randn(2, n, c, generator=g) for s in ("left", "right")}, "cond": cond,
             "seed": torch.tensor([3, 4])}  # fmt: skip
    task = BinauralFlowTask(BinauralFlowConfig(cond_dropout=0.0, video_drop=0.0, lead_weight=3.0, event_weight=5.0))
    prepared = task.prepare(batch, torch.device("cpu"))
    with torch.no_grad():
        loss = task.loss(model, prepared)
        xt, target, _ = noised_streams(prepared["streams"], prepared["t"], prepared["noise"])
        pred = model.velocity(xt, prepared["t"], prepared["cond"])
    w = task.element_weights(model, prepared)
    per_ear = [((pred[s] - target[s]).square() * w[s]).flatten(1).sum(1) / w[s].flatten(1).sum(1) for s in w]
    torch.testing.assert_close(loss, torch.stack(per_ear).mean(0).mean())
    plain = BinauralFlowTask(BinauralFlowConfig(cond_dropout=0.0, video_drop=0.0)).loss(model, prepared)
    assert (loss - plain).abs() > 1e-4
