"""Joint audio-video model: Wan parity, MMAudio loading, information flow, fusion off, clean-frame tasks."""

from __future__ import annotations

import pytest
import torch
from helpers import TEXT_DIM, joint_inputs, perturb

from avflow.errors import ConfigError
from avflow.models.audio_tower import AudioTower, AudioTowerConfig
from avflow.models.joint import JointConfig, JointModel
from avflow.models.tasks import TaskMixture, audio_clean_count, loss_masks, task_times
from avflow.models.wan import WanConfig, WanVideoTower
from avflow.nn.fusion import FUSIONS, block_schedule


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread avoids OpenMP oversubscription on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(fusion: str = "bidirectional", audio_depth: int = 3) -> JointConfig:
    return JointConfig(
        video=WanConfig(
            num_attention_heads=2, attention_head_dim=12, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48, num_layers=2
        ),
        audio=AudioTowerConfig(
            text_dim=TEXT_DIM, hidden_dim=32, depth=audio_depth, fused_depth=1, num_heads=2, text_seq_len=5
        ),
        fusion=fusion,
        fusion_options={"heads": 2} if fusion == "bidirectional" else {},
        text_dim=TEXT_DIM,
        text_len=5,
    )


def inputs(batch: int = 2, frames: int = 3, tokens: int = 12):
    return joint_inputs(batch, frames, tokens)


# --- video tower: parity with diffusers' WanTransformer3DModel ---


@pytest.mark.parametrize("per_frame", [False, True])
def test_wan_parity_with_diffusers(per_frame):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=48,
        num_layers=2,
        rope_max_seq_len=64,
    ).eval()
    perturb(ref, 0.1)
    ours = WanVideoTower(WanConfig.from_diffusers(dict(ref.config))).eval()
    ours.load_diffusers_state_dict(ref.state_dict())
    x, text = torch.randn(2, 16, 3, 4, 6), torch.randn(2, 7, 32)
    t = torch.rand(2, 3) if per_frame else torch.rand(2)
    # diffusers: sigma = 1 - t, timestep = 1000 sigma, per token for Wan 2.2 style; velocity negated
    timestep = 1000 * (1 - t)
    if per_frame:
        timestep = timestep[:, :, None].expand(2, 3, 2 * 3).reshape(2, -1)  # (B, T*h*w)
    with torch.no_grad():
        expected = -ref(x, timestep, text, return_dict=False)[0]
        actual = ours.velocity(x, t, text)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_wan_strict_load_rejects_wrong_layout():
    from avflow.errors import WeightsError

    tower = WanVideoTower(WanConfig(num_attention_heads=2, attention_head_dim=12, text_dim=8, ffn_dim=16, num_layers=1))
    sd = tower.state_dict()
    sd.pop("proj_out.bias")
    with pytest.raises(WeightsError, match="missing"):
        tower.load_diffusers_state_dict(sd)


# --- audio tower: MMAudio weights ---


def test_audio_tower_loads_mmaudio_weights(fixtures):
    from safetensors.torch import load_file

    sd = load_file(fixtures / "mmaudio" / "network_tiny_v1.weights.safetensors")
    tower = AudioTower(
        AudioTowerConfig(text_dim=16, hidden_dim=64, depth=3, fused_depth=1, num_heads=1, text_seq_len=7)
    )
    dropped = tower.load_from_mmaudio(sd)
    assert all(k.startswith(("clip", "sync", "empty_clip", "empty_sync")) or ".clip_block." in k for k in dropped)
    torch.testing.assert_close(
        tower.joint_blocks[0].latent_block.attn.qkv.weight, sd["joint_blocks.0.latent_block.attn.qkv.weight"]
    )
    out = tower(torch.randn(2, 50, 20), torch.rand(2), torch.randn(2, 7, 16))
    assert out.shape == (2, 50, 20) and torch.isfinite(out).all()


# --- joint model ---


def test_fresh_bidirectional_equals_no_fusion():
    """Zero-initialised gates: a fresh fused model computes exactly what its towers compute."""
    torch.manual_seed(1)
    fused = JointModel(tiny_config("bidirectional"))
    plain = JointModel(tiny_config("none"))
    plain.load_state_dict({k: v for k, v in fused.state_dict().items() if not k.startswith("fusion.")})
    streams, t, cond = inputs()
    with torch.no_grad():
        a, b = fused.velocity(streams, t, cond), plain.velocity(streams, t, cond)
    for s in streams:
        assert torch.equal(a[s], b[s])


@pytest.mark.parametrize("fusion", ["bidirectional", "none"])
@pytest.mark.parametrize("cross_modal", [True, False])
def test_information_flow(fusion, cross_modal):
    """d video_out / d audio_in != 0 iff fusion is on, and the other way round."""
    model = perturb(JointModel(tiny_config(fusion)))
    streams, t, cond = inputs()
    streams = {k: v.requires_grad_(True) for k, v in streams.items()}
    out = model.velocity(streams, t, cond, cross_modal=cross_modal)
    g_video_from_audio = torch.autograd.grad(
        out["video"].square().sum(), streams["audio"], retain_graph=True, allow_unused=True
    )[0]
    g_audio_from_video = torch.autograd.grad(out["audio"].square().sum(), streams["video"], allow_unused=True)[0]
    flows = [g is not None and bool(g.abs().sum() > 0) for g in (g_video_from_audio, g_audio_from_video)]
    on = fusion != "none" and cross_modal
    assert flows == [on, on]


@pytest.mark.parametrize("fusion", ["bidirectional", "none"])
def test_fusion_off_equals_separate_towers(fusion):
    model = perturb(JointModel(tiny_config(fusion, audio_depth=4)))
    streams, t, cond = inputs()
    t = {"video": torch.rand(2, 3), "audio": torch.rand(2, 12)}
    text = cond["text"] * cond["text_mask"][..., None]
    with torch.no_grad():
        joint = model.velocity(streams, t, cond, cross_modal=False)
        video = model.video.velocity(streams["video"], t["video"], text)
        audio = model.audio(streams["audio"], t["audio"], text)
        video_only = model.velocity({"video": streams["video"]}, {"video": t["video"]}, cond)["video"]
    assert torch.equal(joint["video"], video)
    assert torch.equal(joint["audio"], audio)
    assert torch.equal(video_only, video)


def test_uneven_depths_schedule_every_block_once():
    assert block_schedule(2, 4) == [[0], [], [1], []]
    assert block_schedule(4, 4) == [[0], [1], [2], [3]]
    assert sorted(sum(block_schedule(3, 7), [])) == [0, 1, 2]
    model = perturb(JointModel(tiny_config("bidirectional", audio_depth=5)))
    streams, t, cond = inputs()
    out = model.velocity(streams, t, cond)
    assert out["video"].shape == streams["video"].shape and out["audio"].shape == streams["audio"].shape


def test_unknown_fusion_is_a_config_error():
    assert set(FUSIONS) >= {"none", "bidirectional"}
    with pytest.raises(ConfigError, match="unknown fusion"):
        JointModel(tiny_config("nope"))


def test_empty_conditions_batch_with_real_ones():
    model = JointModel(tiny_config())
    streams, t, cond = inputs()
    empty = model.empty_conditions(2)
    assert empty["text"].shape == cond["text"].shape and not empty["text_mask"].any()
    both = {k: torch.cat([cond[k], empty[k]]) for k in cond}
    out = model.velocity(
        {k: torch.cat([v, v]) for k, v in streams.items()}, {k: torch.cat([v, v]) for k, v in t.items()}, both
    )
    assert out["audio"].shape[0] == 4


# --- tasks ---


def test_task_times_and_masks():
    t = torch.tensor([0.3, 0.6])
    assert (task_times("a2v", t, 4, 10)["audio"] == 1).all()
    assert (task_times("v2a", t, 4, 10)["video"] == 1).all()
    times = task_times("continuation", t, 4, 10, k_video=2, video_fps=16, temporal_stride=4, audio_rate=31.25)
    n_clean = audio_clean_count(2, 16, 4, 31.25)
    assert n_clean == 15  # 0.5 s of audio latents
    assert (times["video"][:, :2] == 1).all() and (times["video"][:, 2:] < 1).all()
    masks = loss_masks(times)
    assert masks["video"].shape == (2, 1, 4, 1, 1) and masks["audio"].shape == (2, 10, 1)
    with pytest.raises(ConfigError):
        task_times("t2x", t, 4, 10)


def test_task_mixture_ratios():
    mix = TaskMixture({"joint": 0.5, "a2v": 0.5})
    g = torch.Generator().manual_seed(0)
    _, masks, tasks = mix.sample(torch.rand(400), 4, 8, generator=g)
    share = tasks.count("a2v") / len(tasks)
    assert 0.4 < share < 0.6 and set(tasks) == {"joint", "a2v"}
    a2v = torch.tensor([k == "a2v" for k in tasks])
    assert not masks["audio"][a2v].any() and masks["audio"][~a2v].all()
    with pytest.raises(ConfigError):
        TaskMixture({"joint": -1.0})


# --- sampling with clean frames ---


def _sample(model, streams, t_start, cond):
    from avflow.flow.solvers import sample

    noise = {k: torch.randn_like(v) for k, v in streams.items()}
    with torch.no_grad():
        return sample(model, noise, cond, steps=3, clean=streams, t_start=t_start).streams


def test_a2v_sampling_keeps_clean_audio():
    model = perturb(JointModel(tiny_config()))
    streams, _, cond = inputs(frames=2, tokens=8)
    t_start = task_times("a2v", torch.zeros(2), 2, 8)
    out = _sample(model, streams, t_start, cond)
    assert torch.equal(out["audio"], streams["audio"])
    assert not torch.equal(out["video"], streams["video"])


def test_continuation_sampling_keeps_clean_frames():
    model = perturb(JointModel(tiny_config()))
    streams, _, cond = inputs(frames=3, tokens=16)
    t_start = task_times("continuation", torch.zeros(2), 3, 16, k_video=1)
    k_audio = int((t_start["audio"][0] == 1).sum())
    assert k_audio > 0
    out = _sample(model, streams, t_start, cond)
    assert torch.equal(out["video"][:, :, :1], streams["video"][:, :, :1])
    assert torch.equal(out["audio"][:, :k_audio], streams["audio"][:, :k_audio])
    assert not torch.equal(out["video"][:, :, 1:], streams["video"][:, :, 1:])


# --- text encoder ---


def test_minilm_text_encoder_offline(monkeypatch):
    from avflow.encoders.text import MiniLMTextEncoder, TinyTextEncoder, minilm_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (minilm_dir() / "model.safetensors").is_file()
    encoder = MiniLMTextEncoder(max_len=16)
    states, mask = encoder(["a rubber ball bounces twice", "a rubber ball bounces three times", "violin"])
    assert states.shape == (3, 16, 384) and mask.dtype == torch.bool
    assert (states[~mask] == 0).all() and mask[2].sum() < mask[0].sum()
    pooled = torch.nn.functional.normalize((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2]
    tiny_states, tiny_mask = TinyTextEncoder(max_len=8)(["hello world", ""])
    assert tiny_states.shape == (2, 8, 384) and tiny_mask.sum(1).tolist() == [2, 0]
    # count_tokens says what the mask would hold without the cut ([CLS] and [SEP] included)
    assert encoder.count_tokens("a rubber ball bounces twice") == mask[0].sum() < 16
    long = "a rubber ball bounces twice on the left and then rolls along the floor to the wall"
    assert encoder.count_tokens(long) > 16 == encoder([long])[1].sum()
    assert TinyTextEncoder(max_len=2).count_tokens("hello big world") == 3


# --- slow: overfit world clips ---


@pytest.mark.slow
def test_overfit_world_clips(tmp_path):
    """16 world clips, joint task: loss falls >= 50 % and generated onsets land within one video frame of GT."""
    import numpy as np

    from avflow.codecs.world_audio_vae import WorldAudioVAE, WorldAudioVAEConfig
    from avflow.codecs.world_video_ae import WorldVideoAE, WorldVideoAEConfig, frames_to_video
    from avflow.encoders.text import TinyTextEncoder
    from avflow.eval.sync import sync_to_events
    from avflow.flow.loss import flow_matching_loss, noised_streams
    from avflow.flow.solvers import sample
    from avflow.world.dataset import load_clip, make_clip, write_clip
    from avflow.world.scene import WorldConfig

    torch.manual_seed(0)
    world = WorldConfig(width=32, height=32, duration=2.0, max_objects=2)
    clips = []
    for seed in range(16):
        write_clip(make_clip(seed, world, f"c{seed}"), tmp_path / f"c{seed}")
        clips.append(load_clip(tmp_path / f"c{seed}"))
    fps, sr = world.fps, world.sample_rate
    video = torch.cat([frames_to_video(torch.from_numpy(c.frames)) for c in clips])  # (16, 3, 32, 32, 32)
    wav = torch.stack([torch.from_numpy(c.audio).mean(0) for c in clips])  # (16, 32000) mono

    vae = WorldAudioVAE(WorldAudioVAEConfig(channels=64))
    mel = vae.wav_to_mel(wav)
    ae = WorldVideoAE(WorldVideoAEConfig(channels=16))
    for model, data, steps in ((vae, mel, 400), (ae, video, 150)):
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(steps):
            loss, _ = model.loss(data)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        vae.fit_latent_stats(mel)
        ae.fit_latent_scale(video)
        x1 = {"video": ae.encode(video), "audio": vae.encode_mel(mel)}  # (16,16,8,4,4), (16,62,20)
    text, mask = TinyTextEncoder(max_len=16)([c.meta["caption"] for c in clips])
    cond = {"text": text, "text_mask": mask}

    config = JointConfig(text_len=16, video_fps=fps)
    model = JointModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(600):
        t = torch.rand(16)
        noise = {k: torch.randn_like(v) for k, v in x1.items()}
        xt, target, lmask = noised_streams(x1, {k: t for k in x1}, noise)
        pred = model.velocity(xt, {k: t for k in x1}, cond)
        loss = sum(flow_matching_loss(pred[k], target[k], lmask[k]).mean() for k in x1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:30]), np.mean(losses[-30:])
    assert last <= 0.5 * first, (first, last)

    model.eval()
    with torch.no_grad():
        noise = {k: torch.randn_like(v) for k, v in x1.items()}
        out = sample(model, noise, cond, steps=25).streams
        gen = vae.decode(out["audio"]).numpy()
        ref = vae.decode(x1["audio"]).numpy()
    frame = 1.0 / fps
    offsets, matched, ref_matched = [], [], []
    for i, c in enumerate(clips):
        events = np.array([e["time"] for e in c.meta["events"]])
        if events.size == 0:
            continue
        m = sync_to_events(gen[i], sr, events, tolerance_s=frame)
        r = sync_to_events(ref[i], sr, events, tolerance_s=frame)
        matched.append(m["matched"])
        ref_matched.append(r["matched"])
        if np.isfinite(m["offset_ms"]):
            offsets.append(abs(m["offset_ms"]))
    print(
        f"loss {first:.3f} -> {last:.3f}; onsets matched {np.mean(matched):.2f} (codec path {np.mean(ref_matched):.2f})"
    )
    assert offsets and np.median(offsets) <= 1000 * frame
    # the tiny world VAE + Griffin-Lim path bounds what any generator can score: compare against GT latents through it
    assert np.mean(matched) >= 0.8 * np.mean(ref_matched)


# --- binaural audio streams and per-sample task draws ---


def binaural_config() -> JointConfig:
    from dataclasses import replace

    base = tiny_config()
    return replace(base, audio=replace(base.audio, latent_dim=8), audio_streams=("left", "right"))


def test_binaural_streams_are_the_towers_channels_side_by_side():
    """left/right (B, N, 4) each: the audio tower sees [left, right] in channels; the velocity splits back."""
    torch.manual_seed(0)
    model = perturb(JointModel(binaural_config())).eval()
    streams, t, cond = inputs(tokens=6)
    left, right = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    bi = {"video": streams["video"], "left": left, "right": right}
    times = {"video": t["video"], "left": t["audio"], "right": t["audio"]}
    with torch.no_grad():
        out = model.velocity(bi, times, cond)
        assert set(out) == {"video", "left", "right"} and out["left"].shape == (2, 6, 4)
        xa = torch.cat([left, right], dim=-1)
        audio_only = model.velocity({"left": left, "right": right}, {"left": t["audio"], "right": t["audio"]}, cond)
        torch.testing.assert_close(torch.cat([audio_only["left"], audio_only["right"]], -1),
                                   model.audio(xa, t["audio"], model._text(cond)))  # fmt: skip
    with pytest.raises(ConfigError, match="'left' and 'right'"):
        model.velocity({"video": streams["video"], "left": left}, times, cond)
    with pytest.raises(ConfigError, match="audio_streams"):
        JointConfig(audio_streams=("left",))


def test_task_draws_do_not_depend_on_the_batch_split():
    """JointFlowTask draws each sample's task from that sample's seed: one batch of 8 == two batches of 4."""
    from avflow.train.joint_task import JointFlowConfig, JointFlowTask

    task = JointFlowTask(JointFlowConfig(ratios={"joint": 0.4, "a2v": 0.2, "v2a": 0.2, "continuation": 0.2}))
    seeds = torch.arange(100, 108)
    streams = {"video": torch.zeros(8, 16, 4, 2, 2), "left": torch.zeros(8, 10, 3), "right": torch.zeros(8, 10, 3)}

    def prepared(idx):
        batch = {"streams": {k: v[idx] for k, v in streams.items()}, "cond": {}, "seed": seeds[idx]}
        return task.prepare(batch, torch.device("cpu"))["t"]

    whole = prepared(slice(0, 8))
    halves = [prepared(slice(0, 4)), prepared(slice(4, 8))]
    for name in ("video", "left", "right"):
        torch.testing.assert_close(whole[name], torch.cat([h[name] for h in halves]), rtol=0, atol=0)
    torch.testing.assert_close(whole["left"], whole["right"], rtol=0, atol=0)
    assert len({tuple(r.tolist()) for r in (whole["video"] == 1).int()}) > 1  # tasks differ across samples


def test_clean_prefixes_cover_the_same_span_in_both_streams():
    """Continuation and prefixed a2v / v2a: k clean video frames <-> k * N / T clean audio latents (from the shapes)."""
    from avflow.train.joint_task import JointFlowConfig, JointFlowTask

    task = JointFlowTask(JointFlowConfig(ratios={"a2v": 1, "v2a": 1, "continuation": 1}, prefix=1.0))
    n = 64
    streams = {"video": torch.zeros(40, 16, 8, 2, 2), "left": torch.zeros(40, 64, 3), "right": torch.zeros(40, 64, 3)}
    t = task.prepare({"streams": streams, "cond": {}, "seed": torch.arange(40)}, torch.device("cpu"))["t"]
    kinds = set()
    for tv, ta in zip(t["video"], t["left"]):
        k_video, k_audio = int((tv == 1).sum()), int((ta == 1).sum())
        if k_audio == n:  # a2v: all audio clean, video prefix
            kinds.add("a2v")
            assert 0 < k_video < 8 and (tv[:k_video] == 1).all()
        elif k_video == 8:  # v2a: all video clean, audio prefix
            kinds.add("v2a")
            assert k_audio % 8 == 0 and 0 < k_audio < n and (ta[:k_audio] == 1).all()
        else:
            kinds.add("continuation")
            assert k_audio == 8 * k_video and (ta[:k_audio] == 1).all()
    assert kinds == {"a2v", "v2a", "continuation"}


def test_cross_modal_dropout_trains_the_modality_aware_negative():
    """cross_modal_dropout = 1: every step runs the model with the interaction off and empty conditions (the
    negative branch of modality-aware CFG); 0: as before. The draw is one per step, from its first sample's seed."""
    from avflow.errors import ConfigError
    from avflow.train.joint_task import JointFlowConfig, JointFlowTask

    calls = []

    class Recorder(torch.nn.Module):
        def empty_conditions(self, batch):
            return {"text": torch.zeros(batch, 2, 3)}

        def velocity(self, xt, t, cond, *, cross_modal=True):
            calls.append((cross_modal, cond["text"].abs().sum().item()))
            return {s: torch.zeros_like(x) for s, x in xt.items()}

    streams = {"video": torch.randn(4, 16, 4, 2, 2), "left": torch.randn(4, 8, 3), "right": torch.randn(4, 8, 3)}
    batch = {"streams": streams, "cond": {"text": torch.ones(4, 2, 3)}, "seed": torch.arange(4)}
    for p, expected in ((0.0, True), (1.0, False)):
        task = JointFlowTask(JointFlowConfig(ratios={"joint": 1.0}, cond_dropout=0.0, cross_modal_dropout=p))
        task.loss(Recorder(), task.prepare(batch, torch.device("cpu")))
        assert calls[-1] == (expected, 24.0 if expected else 0.0)  # the text kept, or all empty
    task = JointFlowTask(JointFlowConfig(ratios={"joint": 1.0}, cross_modal_dropout=0.3))
    offs = [not task.prepare({**batch, "seed": torch.arange(s, s + 4)}, torch.device("cpu"))["cross_modal"]
            for s in range(0, 400, 4)]  # fmt: skip
    assert 15 <= sum(offs) <= 45  # about 30 of 100 steps
    with pytest.raises(ConfigError, match="cross_modal_dropout"):
        JointFlowConfig(cross_modal_dropout=1.5)
