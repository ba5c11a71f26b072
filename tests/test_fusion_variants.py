"""Fusion variants (full attention, windowed aligners, region modulation), temporal alignment, PEFT mode."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from helpers import TEXT_DIM, joint_inputs, perturb

from avflow.errors import ConfigError
from avflow.models.audio_tower import AudioTowerConfig
from avflow.models.joint import JointConfig, JointModel, audio_token_seconds, video_frame_seconds
from avflow.models.peft import PeftConfig, apply_peft, merge_lora, trainable_parameters, trainable_summary
from avflow.models.wan import WanConfig
from avflow.nn.fusion import FUSIONS, TowerState, fusion_options
from avflow.nn.fusion.bidirectional import BidirectionalOptions
from avflow.nn.fusion.region_modulation import mask_loss, region_target
from avflow.nn.fusion.windowed_aligners import WindowedAlignerFusion, WindowedAlignerOptions, window_mask
from avflow.nn.temporal_alignment import ALIGNMENTS, TemporalAlignment, av_rotary
from avflow.nn.wan_blocks import WanRotary

FUSION_CASES = {
    "full_attention": ("full_attention", {"heads": 2, "layers": 2}),
    "windowed_aligners": ("windowed_aligners", {"heads": 2, "every": 1, "window": 1}),
    "windowed_aligners+region": ("windowed_aligners", {"heads": 2, "every": 2, "region_modulation": True}),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(fusion: str, options: dict, alignment: str = "none") -> JointConfig:
    return JointConfig(
        video=WanConfig(
            num_attention_heads=2, attention_head_dim=12, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=48, num_layers=2
        ),
        audio=AudioTowerConfig(text_dim=TEXT_DIM, hidden_dim=32, depth=3, fused_depth=1, num_heads=2, text_seq_len=5),
        fusion=fusion,
        fusion_options=options,
        alignment=alignment,
        text_dim=TEXT_DIM,
        text_len=5,
    )


def inputs(batch: int = 2, frames: int = 3, tokens: int = 24):
    return joint_inputs(batch, frames, tokens)


def flows(model: JointModel, cross_modal: bool) -> list[bool]:
    streams, t, cond = inputs()
    streams = {k: v.requires_grad_(True) for k, v in streams.items()}
    out = model.velocity(streams, t, cond, cross_modal=cross_modal)
    g_va = torch.autograd.grad(out["video"].square().sum(), streams["audio"], retain_graph=True, allow_unused=True)[0]
    g_av = torch.autograd.grad(out["audio"].square().sum(), streams["video"], allow_unused=True)[0]
    return [g is not None and bool(g.abs().sum() > 0) for g in (g_va, g_av)]


# --- every fusion x alignment ---


@pytest.mark.parametrize("alignment", list(ALIGNMENTS))
@pytest.mark.parametrize("case", list(FUSION_CASES))
def test_fusion_alignment_combination(case, alignment):
    """Fresh = towers (zero-init outputs); forward + backward; information flows iff fusion on and cross_modal."""
    torch.manual_seed(0)
    fusion, options = FUSION_CASES[case]
    model = JointModel(tiny_config(fusion, options, alignment))
    plain = JointModel(tiny_config("none", {}))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fusion.")})
    streams, t, cond = inputs()
    with torch.no_grad():
        fresh, towers = model.velocity(streams, t, cond), plain.velocity(streams, t, cond)
    assert all(torch.equal(fresh[k], towers[k]) for k in streams)

    perturb(model)
    out = model.velocity(streams, t, cond)
    sum(o.square().mean() for o in out.values()).backward()
    grads = [p.grad for p in model.fusion.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert flows(model, cross_modal=True) == [True, True]
    assert flows(model, cross_modal=False) == [False, False]


def test_no_fusion_moves_nothing_across_and_takes_no_alignment():
    model = perturb(JointModel(tiny_config("none", {}, "none")))
    assert flows(model, cross_modal=True) == [False, False]
    for alignment in set(ALIGNMENTS) - {"none"}:  # no temporal RoPE to align: refused, not ignored
        with pytest.raises(ConfigError, match="no temporal RoPE"):
            JointModel(tiny_config("none", {}, alignment))


def test_rope_free_bidirectional_rejects_alignment_and_bad_names():
    assert set(FUSIONS) >= {"none", "bidirectional", "full_attention", "windowed_aligners"}
    with pytest.raises(ConfigError, match="no temporal RoPE"):
        JointModel(tiny_config("bidirectional", {"heads": 2}, "avsync"))
    with pytest.raises(ConfigError, match="unknown temporal alignment"):
        tiny_config("full_attention", {}, "nope")
    with pytest.raises(ConfigError, match=r"fusion_options\.colour: unknown key"):
        JointModel(tiny_config("full_attention", {"heads": 2, "colour": 1}))
    with pytest.raises(ConfigError, match="places no aligner"):
        JointModel(tiny_config("windowed_aligners", {"heads": 2, "every": 9}))


# --- windowed aligners ---


def aligner_states(frames: int = 4, tokens: int = 32, batch: int = 1):
    v = TowerState(torch.randn(batch, frames * 4, 24, requires_grad=True), grid=(frames, 2, 2))
    a = TowerState(torch.randn(batch, tokens, 32, requires_grad=True), grid=(tokens,))
    v.seconds = video_frame_seconds(frames, 16.0, 4)
    a.seconds = audio_token_seconds(tokens, 31.25)
    return v, a


@pytest.mark.parametrize("window", [0, 1])
def test_audio_to_video_window_is_exact(window):
    """A video frame's output has exactly zero gradient w.r.t. audio tokens outside its window, non-zero inside."""
    torch.manual_seed(0)
    fusion = perturb(WindowedAlignerFusion(24, 32, 1, 1, WindowedAlignerOptions(heads=2, window=window)))
    v, a = aligner_states()
    video_in, audio_in = v.x, a.x
    fusion.exchange(0, v, a)
    period = 4 / 16.0
    for frame in range(4):
        (grad,) = torch.autograd.grad(v.x[:, frame * 4 : (frame + 1) * 4].sum(), audio_in, retain_graph=True)
        inside = window_mask(v.seconds, a.seconds, period, window, 1)[frame]  # its geometry: test_window_geometry
        assert (grad[0, ~inside] == 0).all()
        assert (grad[0, inside].abs().sum(-1) > 0).all()
    # video-to-audio: an audio token only sees the two latent frames around its time
    (grad,) = torch.autograd.grad(a.x[:, 10].sum(), video_in)
    t10 = float(a.seconds[10])
    per_frame = grad[0].view(4, 4, 24).abs().sum((1, 2))
    neighbours = (v.seconds - t10).abs() < period
    assert (per_frame[~neighbours] == 0).all() and (per_frame[neighbours] > 0).all()


def test_region_modulation_gates_interaction():
    """Update of each video token = mask x ungated update; mask 0 => no change there, and no video context for audio."""
    torch.manual_seed(0)
    fusion = perturb(WindowedAlignerFusion(24, 32, 1, 1, WindowedAlignerOptions(heads=2, region_modulation=True)))

    def update(mask: torch.Tensor | None):
        v, a = aligner_states(batch=2)
        torch.manual_seed(1)
        v.x, a.x = torch.randn_like(v.x, requires_grad=True), torch.randn_like(a.x)
        video_in = v.x
        if mask is not None:
            v.extras["region_mask"] = mask
        fusion.exchange(0, v, a)
        return video_in, v.x - video_in, a.x

    _, full, _ = update(torch.ones(2, 4, 2, 2))
    mask = torch.rand(2, 4, 2, 2)
    mask[:, :, 0, :] = 0  # top row of every frame is outside the region
    _, gated, _ = update(mask)
    torch.testing.assert_close(gated, full * mask.reshape(2, -1, 1), atol=1e-6, rtol=1e-5)
    outside = (mask.reshape(2, -1) == 0)[..., None].expand_as(gated)
    assert (gated[outside] == 0).all() and (gated[~outside].abs() > 0).any()
    _, predicted, _ = update(None)
    torch.testing.assert_close(predicted, full * fusion.predicted_masks[-1][..., None], atol=1e-6, rtol=1e-5)
    video_in, _, audio_out = update(torch.zeros(2, 4, 2, 2))
    (grad,) = torch.autograd.grad(audio_out.sum(), video_in)
    assert (grad == 0).all()


def test_region_mask_supervision_and_joint_forward():
    torch.manual_seed(0)
    model = JointModel(tiny_config("windowed_aligners", {"heads": 2, "region_modulation": True}))
    streams, t, cond = inputs(frames=3)
    object_masks = torch.zeros(2, 12, 2, 32, 32, dtype=torch.bool)  # (B, T, K, H, W): pixel frames, 2 objects
    object_masks[:, :, 0, :16, :16] = True
    target = region_target(object_masks, (3, 2, 2))  # token grid of 3x4x4 latents, patch (1, 2, 2)
    assert target.shape == (2, 3, 2, 2) and float(target[0, 0, 0, 0]) == 1.0 and float(target[0, 0, 1, 1]) == 0.0
    opt = torch.optim.Adam(model.fusion.region.parameters(), lr=3e-2)
    losses = []
    for _ in range(15):
        aux = {}
        model.velocity(streams, t, cond, aux=aux)
        loss = mask_loss(aux["region_masks"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert len(model.fusion.predicted_masks) == model.fusion.n_layers
    assert losses[-1] < 0.5 * losses[0]
    forced = model.velocity(streams, t, {**cond, "region_mask": target})
    assert forced["video"].shape == streams["video"].shape
    with pytest.raises(ConfigError, match="region mask"):
        model.velocity(streams, t, {**cond, "region_mask": torch.ones(2, 5)})


# --- temporal alignment ---


def test_same_time_same_temporal_rotation():
    rope = WanRotary(12)
    tv = torch.arange(4, dtype=torch.float64) * 0.25 + 0.09375  # video latent frames every 0.25 s
    ta = torch.arange(32, dtype=torch.float64) * 0.03125 + 0.09375  # audio token 8k shares frame k's time
    for name in ("avsync", "seconds"):
        pos_v, pos_a = TemporalAlignment(name).positions(tv, ta)
        (cv, sv), (ca, sa) = av_rotary(rope, (4, 2, 2), pos_v, pos_a)
        td = rope.t_dim
        video_t = cv[0, ::4, 0, :td], sv[0, ::4, 0, :td]  # (T, t_dim): first token of each frame
        audio_t = ca[0, :, 0, :td], sa[0, :, 0, :td]  # (N, t_dim)
        for frame in range(4):
            assert torch.equal(video_t[0][frame], audio_t[0][8 * frame])
            assert torch.equal(video_t[1][frame], audio_t[1][8 * frame])
            assert not torch.equal(video_t[1][frame], audio_t[1][8 * frame + 3])
            assert not torch.equal(audio_t[1][8 * frame], audio_t[1][8 * frame + 1])
    pos_v, pos_a = TemporalAlignment("none").positions(tv, ta)
    assert pos_v[1] == 1 and pos_a[8] == 8  # index positions: same time, different rotation


def test_avsync_scales_audio_by_tau():
    """Default rates: τ = Δt_video / Δt_audio = 0.25 / 0.032; audio positions step by 1/τ, video by 1."""
    tv, ta = video_frame_seconds(5, 16.0, 4), audio_token_seconds(40, 31.25)
    pos_v, pos_a = TemporalAlignment("avsync").positions(tv, ta)
    tau = 0.25 / 0.032
    torch.testing.assert_close(pos_v, torch.arange(5, dtype=torch.float64))
    torch.testing.assert_close(pos_a.diff(), torch.full((39,), 1 / tau, dtype=torch.float64))
    torch.testing.assert_close(pos_a, (ta - tv[0]) / 0.25)
    with pytest.raises(ConfigError, match="video period"):
        TemporalAlignment("avsync").positions(tv[:1], ta)
    single, _ = TemporalAlignment("avsync", video_period=0.25).positions(tv[:1], ta)
    assert single.tolist() == [0.0]


# --- parameter-efficient training ---


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_peft_freezes_towers(lora_rank):
    torch.manual_seed(0)
    model = perturb(JointModel(tiny_config("full_attention", {"heads": 2, "layers": 1}, "avsync")))  # "pretrained"
    wrapped = apply_peft(model, PeftConfig(lora_rank=lora_rank))
    assert bool(wrapped) == (lora_rank > 0)
    towers = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fusion.") and "lora_" not in k}
    fusion = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    lora = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    streams, t, cond = inputs()
    out = model.velocity(streams, t, cond)
    sum(o.square().mean() for o in out.values()).backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in towers.items())
    assert any(not torch.equal(model.fusion.state_dict()[k], v) for k, v in fusion.items())
    assert all(not torch.equal(after[k], v) for k, v in lora.items() if k.endswith("lora_b"))

    trainable, total = trainable_parameters(model)
    n_fusion = sum(p.numel() for p in model.fusion.parameters())
    n_lora = sum(v.numel() for v in lora.values())
    assert trainable == n_fusion + n_lora and total == sum(v.numel() for v in model.parameters())
    assert f"trainable {trainable:,} / {total:,}" in trainable_summary(model)

    if lora_rank:
        with torch.no_grad():
            before = model.velocity(streams, t, cond)
            assert merge_lora(model) == len(wrapped)
            merged = model.velocity(streams, t, cond)
        assert not any("lora_" in k for k in model.state_dict())
        for k in before:
            torch.testing.assert_close(merged[k], before[k], atol=1e-4, rtol=1e-4)


# --- typed options, checked when the config is loaded ---


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.args.fusion=bidirectionl"], "model.args.fusion: unknown fusion 'bidirectionl'"),
        (["model.args.fusion_options={head: 2}"], "fusion_options.head: unknown key (expected one of: heads)"),
        (["model.args.fusion_options={heads: two}"], "model.args.fusion_options.heads: expected int"),
        (["model.args.fusion_options={heads: 3}"], "model.args.fusion_options.heads: widths 128, 128 do not split"),
        (["model.args.fusion=full_attention", "model.args.fusion_options={layers: 0}"],
         "model.args.fusion_options.layers: full_attention needs layers >= 1"),
        (["model.args.alignment=avsync"], "model.args.alignment: fusion 'bidirectional' has no temporal RoPE"),
    ],
)  # fmt: skip
def test_print_config_rejects_a_bad_fusion_in_one_line(overrides, message, capsys):
    from avflow.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs" / "default_joint.yaml")
    assert main(["train", config, *overrides, "--print-config"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and len(err.strip().splitlines()) == 1, err


def test_fusion_defaults_live_with_the_variant():
    for name, variant in FUSIONS.items():
        options = fusion_options(name, {})
        assert options == variant.options() and dataclasses.is_dataclass(options)
        with pytest.raises(dataclasses.FrozenInstanceError):
            options.x = 1
    assert JointConfig().fusion_config == BidirectionalOptions()
    typed = fusion_options("windowed_aligners", {"every": 2, "region_modulation": True})
    assert typed == WindowedAlignerOptions(every=2, region_modulation=True)
    with pytest.raises(ConfigError, match="takes WindowedAlignerOptions"):
        fusion_options("windowed_aligners", BidirectionalOptions())
