"""MMAudio-compatible network: fixture parity (v1, v2), official layouts of all five variants, loader errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from avflow.errors import ConfigError, WeightsError
from avflow.flow.sampling import SamplingConfig
from avflow.models.mmaudio import STALE_CHECKPOINT_KEYS, MMAudio, build_mmaudio, load_official_state_dict
from avflow.models.mmaudio_config import CONFIGS, SAMPLING, SYNC_TOKENS_PER_SEGMENT, MMAudioConfig, sequence_lengths
from avflow.pipelines.foley_model import sample_latents

VARIANTS = ["small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is fastest and immune to OpenMP stalls on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def tiny(fixtures, version: str) -> tuple[MMAudio, dict[str, torch.Tensor], dict]:
    folder = fixtures / "mmaudio"
    meta = json.loads((folder / f"network_tiny_{version}.json").read_text())
    model = MMAudio(MMAudioConfig(**meta["constructor"])).eval()
    load_official_state_dict(model, folder / f"network_tiny_{version}.weights.safetensors")
    return model, load_file(str(folder / f"network_tiny_{version}.io.safetensors")), meta


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_tiny_parity(fixtures, version):
    model, io, meta = tiny(fixtures, version)
    assert sum(p.numel() for p in model.parameters()) == meta["param_count"]
    # With gradients on (training), the inference-only shortcuts (distinct-row adaLN, shared t) are off.
    close(model(io["latent"], io["clip_f"], io["sync_f"], io["text_f"], io["t"]).detach(), io["flow"])
    with torch.no_grad():
        close(model(io["latent"], io["clip_f"], io["sync_f"], io["text_f"], io["t"]), io["flow"])
        empty = model.empty_conditions(io["latent"].shape[0])
        close(model.velocity({"audio": io["latent"]}, {"audio": io["t"]}, empty)["audio"], io["flow_empty"])

        cond = model.preprocess_conditions(io["clip_f"], io["sync_f"], io["text_f"])
        steps, w = meta["euler_steps"], meta["cfg_strength"]
        for suffix, negative in [("", None), ("_negative", io["negative_text_f"])]:
            sampling = SamplingConfig(steps=steps, cfg_strength=w)
            x, nfe = sample_latents(model, io["x0"], cond, sampling, negative_text_f=negative)
            assert nfe == 2 * steps
            close(x, io["sample" + suffix])
            close(model.unnormalize(x), io["sample_unnormalized" + suffix])


def test_batched_guidance_matches_separate_forwards(fixtures):
    model, io, _ = tiny(fixtures, "v1")
    cond = model.preprocess_conditions(io["clip_f"], io["sync_f"], io["text_f"])
    sampling = SAMPLING.override(steps=3)
    fast, _ = sample_latents(model, io["x0"], cond, sampling, batched=True)
    plain, _ = sample_latents(model, io["x0"], cond, sampling, batched=False)
    close(fast, plain)


def test_cross_modal_off_uses_empty_visual_keeps_text(fixtures):
    model, io, _ = tiny(fixtures, "v2")
    b, latent, t = io["latent"].shape[0], io["latent"], io["t"]
    cond = model.preprocess_conditions(io["clip_f"], io["sync_f"], io["text_f"])
    with torch.no_grad():
        off = model.velocity({"audio": latent}, {"audio": t}, cond, cross_modal=False)["audio"]
        empty_clip = model.empty_clip_feat.expand(b, model.clip_seq_len, -1)
        empty_sync = model.empty_sync_feat.expand(b, model.sync_seq_len, -1)
        expected = model(latent, empty_clip, empty_sync, io["text_f"], t)
        on = model.velocity({"audio": latent}, {"audio": t}, cond)["audio"]
        per_frame = model.velocity({"audio": latent}, {"audio": t[:, None].expand(-1, latent.shape[1])}, cond)
    close(off, expected)
    close(per_frame["audio"], on)
    assert (off - on).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="per-frame"):
        model.velocity({"audio": latent}, {"audio": torch.rand(b, latent.shape[1])}, cond)


def test_sequence_lengths_and_new_duration(fixtures):
    assert sequence_lengths(8.0, 16000, 256) == (250, 64, 192)
    assert sequence_lengths(8.0, 44100, 512) == (345, 64, 192)
    assert sequence_lengths(10.0, 16000, 256).latent == 313
    with pytest.raises(ConfigError):
        sequence_lengths(0.3)

    model = build_mmaudio("small_16k", device="meta")
    assert model.set_duration(4.0) == sequence_lengths(4.0)
    assert model.latent_seq_len == 125 and model.clip_seq_len == 32 and model.sync_seq_len == 88

    model, io, _ = tiny(fixtures, "v1")
    # Shorter than the fixture's clip: half its CLIP frames, a whole number of latents per CLIP frame.
    batch, fixture_latents, width = io["latent"].shape
    n_clip = io["clip_f"].shape[1] // 2
    step = fixture_latents // n_clip
    n_latent, n_sync = step * n_clip, SYNC_TOKENS_PER_SEGMENT * (io["sync_f"].shape[1] // SYNC_TOKENS_PER_SEGMENT // 2)
    model.update_seq_lengths(n_latent, n_clip, n_sync)
    latent_rope, clip_rope = model.rope_tables(torch.device("cpu"))
    assert latent_rope.length == n_latent and clip_rope.length == n_clip
    # Aligned RoPE: CLIP frame 1 rotates like latent frame n_latent / n_clip.
    torch.testing.assert_close(clip_rope.cos[1], latent_rope.cos[step])
    with torch.no_grad():
        cond = model.preprocess_conditions(io["clip_f"][:, :n_clip], io["sync_f"][:, :n_sync], io["text_f"])
        v = model.velocity({"audio": io["latent"][:, :n_latent]}, {"audio": io["t"]}, cond)["audio"]
    assert v.shape == (batch, n_latent, width) and torch.isfinite(v).all()
    with pytest.raises(ConfigError, match="CLIP"):
        model.preprocess_conditions(io["clip_f"], io["sync_f"], io["text_f"])


@pytest.mark.parametrize("name", VARIANTS)
def test_official_layout_on_meta(fixtures, name):
    official = json.loads((fixtures / "mmaudio" / "official_state_dicts.json").read_text())[name]
    model = build_mmaudio(name, device="meta")
    layout = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert layout == official["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == official["param_count"]
    cfg, c = CONFIGS[name], official["config"]
    assert (cfg.hidden_dim, cfg.num_heads, cfg.latent_dim, cfg.v2) == (
        c["hidden_dim"],
        c["num_heads"],
        c["latent_dim"],
        c["v2"],
    )
    assert (cfg.latent_seq_len, cfg.clip_seq_len, cfg.sync_seq_len) == (
        c["latent_seq_len"],
        c["clip_seq_len"],
        c["sync_seq_len"],
    )
    assert (cfg.joint_depth, cfg.fused_depth) == (c["joint_blocks"], c["fused_blocks"])
    assert sorted(STALE_CHECKPOINT_KEYS) == sorted(c["ignorable_checkpoint_keys"])


def test_pth_with_stale_keys_loads_weights_only(fixtures, tmp_path):
    folder = fixtures / "mmaudio"
    state = load_file(str(folder / "network_tiny_v1.weights.safetensors"))
    state.update({"t_embed.freqs": torch.zeros(128), "latent_rot": torch.zeros(1), "clip_rot": torch.zeros(1)})
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    meta = json.loads((folder / "network_tiny_v1.json").read_text())
    model = load_official_state_dict(build_mmaudio(MMAudioConfig(**meta["constructor"]), device="meta"), path).eval()
    io = load_file(str(folder / "network_tiny_v1.io.safetensors"))
    with torch.no_grad():
        close(model(io["latent"], io["clip_f"], io["sync_f"], io["text_f"], io["t"]), io["flow"])


def test_loader_errors_name_the_key(fixtures, tmp_path):
    folder = fixtures / "mmaudio"
    meta = json.loads((folder / "network_tiny_v1.json").read_text())
    state = load_file(str(folder / "network_tiny_v1.weights.safetensors"))
    model = MMAudio(MMAudioConfig(**meta["constructor"]))

    dropped = dict(state)
    del dropped["fused_blocks.0.attn.qkv.weight"]
    with pytest.raises(WeightsError, match=r"missing.*fused_blocks\.0\.attn\.qkv\.weight"):
        load_official_state_dict(model, dropped)

    added = {**state, "joint_blocks.9.bogus": torch.zeros(3)}
    with pytest.raises(WeightsError, match=r"unexpected.*joint_blocks\.9\.bogus"):
        load_official_state_dict(model, added)

    reshaped = {**state, "final_layer.conv.weight": torch.zeros(20, 64, 3)}
    with pytest.raises(WeightsError, match=r"final_layer\.conv\.weight.*\(20, 64, 3\)"):
        load_official_state_dict(model, reshaped)

    with pytest.raises(WeightsError, match="not found"):
        load_official_state_dict(model, tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pth"):
        load_official_state_dict(model, bad)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_network_of_another_official_shape_is_named(fixtures, name):
    """A checkpoint of one official variant loaded into a network of another shape (a fine-tune of small_16k given
    with the default large_44k_v2, say) is named as that variant in one line; the file's keys and shapes are the
    official ones the fixture records (meta tensors: no memory)."""
    official = json.loads((fixtures / "mmaudio" / "official_state_dicts.json").read_text())
    state = {k: torch.empty(shape, device="meta") for k, shape in official[name]["state_dict"].items()}
    meta = json.loads((fixtures / "mmaudio" / "network_tiny_v1.json").read_text())
    tiny = build_mmaudio(MMAudioConfig(**meta["constructor"]), device="meta")
    with pytest.raises(WeightsError, match=rf"holds a {name} network .*not one of this model's shape") as error:
        load_official_state_dict(tiny, state, name="finetune.pth")
    assert "\n" not in str(error.value) and "missing keys" not in str(error.value)
    load_official_state_dict(build_mmaudio(name, device="meta"), state)  # into its own shape it loads
