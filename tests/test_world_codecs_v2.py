"""World codecs v2: the frame-wise video autoencoder and the binaural audio codec, their measures and loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avflow.codecs.world import load_world_codecs, save_codec
from avflow.codecs.world_audio_codec import WorldAudioCodec, WorldAudioCodecConfig
from avflow.codecs.world_video_codec import WorldVideoCodec, WorldVideoCodecConfig
from avflow.errors import ConfigError, WeightsError
from avflow.eval.audio_quality import stft_log_distance
from avflow.eval.video_quality import boundary_psnr_gap, colour_mask, frame_psnr, object_scores

SMALL_VIDEO = WorldVideoCodecConfig(channels=(8, 16, 16), blocks=(1, 1, 1), latent_blocks=1)
SMALL_AUDIO = WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1, latent_channels=4)


@pytest.mark.parametrize("frames,size", [(8, 64), (12, 32), (4, 16)])
def test_video_codec_shapes_and_determinism(frames, size):
    torch.manual_seed(0)
    codec = WorldVideoCodec(SMALL_VIDEO).eval()
    video = torch.rand(2, 3, frames, size, size) * 2 - 1
    with torch.no_grad():
        z = codec.encode(video)
        assert z.shape == (2, 16, frames // 4, size // 8, size // 8)
        assert codec.latent_shape(frames, size, size) == tuple(z.shape[2:])
        rec = codec.decode(z)
        assert rec.shape == video.shape and rec.abs().max() <= 1.0
        assert torch.equal(codec.decode(codec.encode(video)), rec)


def test_video_codec_latent_frames_are_local_in_time():
    """Latent frame j depends only on pixel frames [4j, 4j + 4): changing frame 5 leaves latent 0 and 2 intact."""
    torch.manual_seed(0)
    codec = WorldVideoCodec(SMALL_VIDEO).eval()
    video = torch.rand(1, 3, 12, 16, 16) * 2 - 1
    changed = video.clone()
    changed[:, :, 5] = -changed[:, :, 5]
    with torch.no_grad():
        a, b = codec.encode(video), codec.encode(changed)
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and torch.equal(a[:, :, 2], b[:, :, 2])
    assert not torch.equal(a[:, :, 1], b[:, :, 1])


@pytest.mark.parametrize("shape", [(1, 3, 6, 16, 16), (1, 3, 8, 20, 16), (1, 4, 8, 16, 16), (3, 8, 16, 16)])
def test_video_codec_rejects_bad_shapes(shape):
    with pytest.raises(ConfigError):
        WorldVideoCodec(SMALL_VIDEO).encode(torch.zeros(shape))


def test_video_refine_stage_starts_as_the_decoder_and_keeps_the_checksum(tmp_path):
    """The full-resolution stage (decoder-only config fields) starts as identity, so a codec given one decodes as
    before; saved on the stored encoder it has the latent checksum of the codec without it."""
    from avflow.codecs.world import latent_checksum
    from avflow.weights import read_state_dict

    torch.manual_seed(0)
    config = WorldVideoCodecConfig(channels=(8, 16, 16), latent_blocks=1)
    plain = WorldVideoCodec(config).eval()
    refined = WorldVideoCodec(WorldVideoCodecConfig(**{**config.__dict__, "refine_channels": 8})).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refine.") for k in missing)
    video = torch.rand(1, 3, 8, 32, 32) * 2 - 1  # (B, 3, T, H, W)
    with torch.no_grad():
        z = plain.encode(video)
        assert torch.equal(refined.encode(video), z)
        assert torch.allclose(refined.decode(z), plain.decode(z), atol=1e-6)
        refined.refine.out[-1].weight.normal_()  # a trained stage changes the frames, not the latents
        assert not torch.allclose(refined.decode(z), plain.decode(z), atol=1e-3)
    save_codec(plain, tmp_path / "a", "video")
    stored = read_state_dict(tmp_path / "a" / "video.safetensors")
    save_codec(refined, tmp_path / "b", "video", encoder_state=stored)
    again = read_state_dict(tmp_path / "b" / "video.safetensors")
    assert latent_checksum({"video": plain}, {"video": stored}) == latent_checksum({"video": refined}, {"video": again})
    with pytest.raises(ConfigError, match="refine_channels"):
        WorldVideoCodecConfig(refine_channels=4)


def test_audio_codec_layout_shapes_and_determinism():
    torch.manual_seed(0)
    codec = WorldAudioCodec(SMALL_AUDIO).eval()
    spl = codec.samples_per_latent
    assert spl == SMALL_AUDIO.hop * SMALL_AUDIO.latent_stride
    assert codec.latent_rate == pytest.approx(codec.sample_rate / spl)
    audio = torch.randn(2, 2, 6 * spl) * 0.1
    with torch.no_grad():
        z = codec.encode(audio)
        assert set(z) == {"left", "right"} and z["left"].shape == (2, 6, SMALL_AUDIO.latent_channels)
        wav = codec.decode(z)
        assert wav.shape == audio.shape
        assert torch.equal(codec.decode(codec.encode(audio)), wav)
        assert codec.decode(z, length=6 * spl - 7).shape[-1] == 6 * spl - 7
        assert codec.decode(z, length=6 * spl + 9).shape[-1] == 6 * spl + 9


def test_audio_codec_ears_are_coded_alike():
    """One network for both ears: swapping the input channels swaps the streams exactly."""
    torch.manual_seed(0)
    codec = WorldAudioCodec(SMALL_AUDIO).eval()
    audio = torch.randn(1, 2, 4 * codec.samples_per_latent) * 0.1
    with torch.no_grad():
        z, zs = codec.encode(audio), codec.encode(audio.flip(1))
    torch.testing.assert_close(zs["left"], z["right"])
    torch.testing.assert_close(zs["right"], z["left"])


@pytest.mark.parametrize("samples", [0, 1001, 500 * 3 + 1])
def test_audio_codec_rejects_bad_lengths(samples):
    codec = WorldAudioCodec(SMALL_AUDIO)
    with pytest.raises(ConfigError):
        codec.encode(torch.zeros(1, 2, samples))
    with pytest.raises(ConfigError):
        codec.encode(torch.zeros(1, 1, 2000))


def test_audio_codec_loss_trains_a_few_steps():
    """The loss (auraloss multi-resolution STFT + complex + waveform terms) decreases on one batch."""
    torch.manual_seed(0)
    codec = WorldAudioCodec(SMALL_AUDIO)
    t = torch.arange(8 * codec.samples_per_latent) / codec.sample_rate
    tone = 0.3 * torch.sin(2 * torch.pi * 440 * t) * torch.exp(-8 * t)
    audio = torch.stack([tone, 0.5 * tone])[None]
    opt = torch.optim.Adam(codec.parameters(), 3e-3)
    first = None
    for _ in range(30):
        loss, parts = codec.loss(audio)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(parts) == {"complex_l1", "stft", "wave_l1"}
    assert loss.item() < 0.8 * first


def test_stft_log_distance():
    torch.manual_seed(0)
    x = torch.randn(2, 4000)
    assert stft_log_distance(x, x).item() == 0.0
    assert stft_log_distance(0.5 * x, x, range_db=None).item() == pytest.approx(np.log(2), rel=0.05)
    with pytest.raises(ValueError):
        stft_log_distance(x, x[:, :100])
    # a tone over a quiet noise: another noise draw 70 dB down is invisible with the 60 dB range, not without
    t = torch.arange(8000) / 16000
    tone = torch.sin(2 * torch.pi * 440 * t)
    a, b = tone + 3e-4 * torch.randn(8000), tone + 3e-4 * torch.randn(8000)
    assert stft_log_distance(a, b).item() < 0.01 < stft_log_distance(a, b, range_db=None).item()


def test_object_scores_on_known_masks():
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    masks = np.zeros((2, 1, 16, 16), bool)
    masks[:, 0, 4:8, 4:8] = True  # 16 px
    frames[0, 4:8, 4:8] = (220, 40, 40)  # exact
    frames[1, 4:8, 5:9] = (230, 50, 45)  # shifted by one pixel, colour within tolerance
    scores = object_scores(frames, masks, [{"rgb": (220, 40, 40), "colour": "red", "shape": "square"}])
    assert [s.frame for s in scores] == [0, 1]
    assert scores[0].iou == 1.0 and scores[0].centroid_error_px == 0.0
    assert scores[1].iou == pytest.approx(12 / 20) and scores[1].centroid_error_px == pytest.approx(1.0)
    assert colour_mask(frames, (220, 40, 40)).sum() == 32
    frames[1] = 0
    assert object_scores(frames, masks, [{"rgb": (220, 40, 40), "colour": "red", "shape": "square"}])[1].iou == 0.0


def test_frame_psnr_and_boundary_gap():
    ref = np.full((8, 4, 4, 3), 100, np.uint8)
    rec = ref.copy()
    rec[3] += 10  # frames 3 and 4 sit on the latent boundary at 4
    rec[4] += 10
    psnr = frame_psnr(ref, rec)
    assert psnr[3] == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr[0] == 100.0  # identical frames: capped at 100 dB (PSNR_CAP_DB)
    assert boundary_psnr_gap(psnr) < -50


def test_codec_folder_round_trip_and_checksum(tmp_path):
    torch.manual_seed(0)
    video, audio = WorldVideoCodec(SMALL_VIDEO), WorldAudioCodec(SMALL_AUDIO)
    video.latent_scale.fill_(2.0)
    save_codec(video, tmp_path, "video")  # int8, the default
    save_codec(audio, tmp_path, "audio", storage="fp16")
    codecs = load_world_codecs(tmp_path)
    assert codecs.video.config == SMALL_VIDEO and codecs.audio.config == SMALL_AUDIO
    assert float(codecs.video.latent_scale) == 2.0
    torch.testing.assert_close(codecs.audio.head.weight, audio.head.weight.half().float())
    step = video.dec_frames[-1].weight.abs().max() / 127
    assert (codecs.video.dec_frames[-1].weight - video.dec_frames[-1].weight).abs().max() <= step
    with pytest.raises(ConfigError, match="storage must be one of"):
        save_codec(audio, tmp_path, "audio", storage="int4")
    codecs.check_trained_with(codecs.checksum, "model")
    with pytest.raises(WeightsError, match="trained with world codecs"):
        codecs.check_trained_with("0" * 64, "model")
    (tmp_path / "audio.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing: audio.safetensors"):
        load_world_codecs(tmp_path)


def test_checksum_covers_the_latent_space_only(tmp_path):
    """A decoder trained further keeps the checksum; another encoder or latent scale changes it."""
    torch.manual_seed(0)
    video, audio = WorldVideoCodec(SMALL_VIDEO), WorldAudioCodec(SMALL_AUDIO)
    save_codec(video, tmp_path, "video")
    save_codec(audio, tmp_path, "audio")
    first = load_world_codecs(tmp_path).checksum
    with torch.no_grad():
        video.dec_frames[-1].weight.add_(1.0)
        audio.head.weight.add_(1.0)
    save_codec(video, tmp_path, "video")
    save_codec(audio, tmp_path, "audio")
    assert load_world_codecs(tmp_path).checksum == first
    audio.latent_scale.fill_(3.0)
    save_codec(audio, tmp_path, "audio")
    assert load_world_codecs(tmp_path).checksum != first


def test_int8_storage_round_trip_is_close_and_half_the_size():
    from avflow.weights import INT8_GROUP, INT8_SCALE, dequantize_int8, quantize_int8

    torch.manual_seed(0)
    weight = torch.randn(96, 251, 3) * torch.logspace(-3, 0, 251)[None, :, None]  # rows over very different scales
    state = {"w": weight, "bias": torch.randn(96), "steps": torch.tensor(3)}
    stored = quantize_int8(state)
    assert stored["w"].dtype == torch.int8 and stored["bias"].dtype == torch.float16
    assert stored["steps"].dtype == torch.int64
    assert stored["w" + INT8_SCALE].numel() == -(-weight.numel() // INT8_GROUP)
    back = dequantize_int8(stored)
    assert set(back) == set(state) and back["w"].shape == weight.shape
    groups = torch.nn.functional.pad(weight.reshape(-1), (0, -weight.numel() % INT8_GROUP)).reshape(-1, INT8_GROUP)
    bound = (groups.abs().amax(1) / 127 * 0.5 * 1.01 + 1e-7).repeat_interleave(INT8_GROUP)[: weight.numel()]
    assert ((back["w"] - weight).abs().reshape(-1) <= bound).all()  # half a step of its own group's scale
    per_row = weight.abs().amax(dim=(1, 2), keepdim=True) / 127 * 0.5  # what one scale per row would allow
    assert (back["w"] - weight).abs().mean() < 0.2 * per_row.mean()
    assert torch.equal(back["steps"], state["steps"])
    fp16_bytes = weight.numel() * 2
    int8_bytes = stored["w"].numel() + stored["w" + INT8_SCALE].numel() * 2
    assert int8_bytes <= 0.55 * fp16_bytes


def test_interaural_loss_sees_delays_and_levels():
    """Zero for the same binaural signal; grows with a wrong ITD (one ear delayed 8 samples) or ILD (6 dB); blind to
    the common delay of both ears' time course beyond what the cross-spectrum carries."""
    from avflow.codecs.world_audio_codec import interaural_l1

    g = torch.Generator().manual_seed(0)
    burst = torch.randn(1, 4000, generator=g) * torch.exp(-torch.arange(4000) / 400.0)  # a decaying noise burst
    burst = torch.nn.functional.pad(burst, (1000, 3000))  # (1, 8000)
    ref = torch.cat([burst, torch.roll(burst, 8, dims=-1)])[None]  # (1, 2, 8000): right ear 0.5 ms late
    assert float(interaural_l1(ref, ref, 0.3)) == 0.0
    no_itd = torch.cat([burst, burst])[None]
    wrong_ild = ref * torch.tensor([1.0, 0.5])[None, :, None]
    for wrong in (no_itd, wrong_ild):
        assert float(interaural_l1(wrong, ref, 0.3)) > 0.1 * float(interaural_l1(torch.zeros_like(ref), ref, 0.3))


def test_audio_codec_extra_loss_terms_add_up():
    codec = WorldAudioCodec(WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1, latent_channels=4))
    audio = torch.randn(2, 2, 2000, generator=torch.Generator().manual_seed(1)) * 0.1
    plain, parts = codec.loss(audio)
    full, more = codec.loss(audio, interaural_weight=2.0, fine_stft_weight=0.5)
    assert set(more) == set(parts) | {"interaural", "fine_stft"}
    expected = plain.item() + 2.0 * more["interaural"] + 0.5 * more["fine_stft"]
    assert full.item() == pytest.approx(expected, rel=1e-5)


def test_pre_echo_error_sees_the_level_ahead_of_an_attack_only():
    """Zero for the input itself; 20 dB of noise in the 6 ms before an attack costs about its excess, and so does a
    hole there (silence where the room noise was: a decoder must not duck before attacks); the same noise in a quiet
    stretch far from any attack, or after the attack, costs nothing (the ambience is the other terms')."""
    from avflow.codecs.world_audio_codec import pre_echo_error

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 2, 16000, generator=g) * 1e-3  # room noise
    ref[..., 8000:9600] += torch.randn(1, 2, 1600, generator=g) * 0.1  # an attack at 0.5 s
    assert float(pre_echo_error(ref, ref, 50.0)) == 0.0
    noise = torch.randn(1, 2, 100, generator=g) * 1e-2  # 20 dB over the room noise, 6.25 ms
    early, hole, far, late = ref.clone(), ref.clone(), ref.clone(), ref.clone()
    early[..., 7900:8000] += noise
    hole[..., 7900:8000] = 0.0
    far[..., 3000:3100] += noise
    late[..., 8100:8200] += noise
    for changed in (early, hole):
        assert float(pre_echo_error(changed, ref, 50.0)) * 20 / np.log(10) > 5.0
    assert float(pre_echo_error(far, ref, 50.0)) == 0.0
    assert float(pre_echo_error(late, ref, 50.0)) == 0.0
    codec = WorldAudioCodec(SMALL_AUDIO)
    plain, parts = codec.loss(ref)
    full, more = codec.loss(ref, pre_echo_weight=3.0)
    assert full.item() == pytest.approx(plain.item() + 3.0 * more["pre_echo_db"] * np.log(10) / 20, rel=1e-4)


def test_saving_a_decoder_trained_on_a_frozen_encoder_keeps_the_checksum(tmp_path):
    from avflow.codecs.world import latent_checksum
    from avflow.weights import read_state_dict

    config = WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1, latent_channels=4)
    torch.manual_seed(0)
    first = WorldAudioCodec(config)
    first.latent_scale.fill_(0.37)
    save_codec(first, tmp_path / "a", "audio")
    stored = read_state_dict(tmp_path / "a" / "audio.safetensors")
    retrained = WorldAudioCodec(config)  # other random decoder (and encoder: replaced by the stored one)
    save_codec(retrained, tmp_path / "b", "audio", encoder_state=stored)
    again = read_state_dict(tmp_path / "b" / "audio.safetensors")
    assert latent_checksum({"audio": first}, {"audio": stored}) == latent_checksum({"audio": first}, {"audio": again})
    assert not torch.equal(again["head.weight"], stored["head.weight"])
    changed = WorldAudioCodec(config)
    save_codec(changed, tmp_path / "c", "audio")  # its own encoder: another latent space
    other = read_state_dict(tmp_path / "c" / "audio.safetensors")
    assert latent_checksum({"audio": first}, {"audio": other}) != latent_checksum({"audio": first}, {"audio": stored})
    with pytest.raises(WeightsError, match="stored encoder's or frozen parts' keys differ"):
        save_codec(retrained, tmp_path / "d", "audio", storage="fp32", encoder_state=stored)


def _delayed_noise(delay: int, samples: int = 8000) -> torch.Tensor:
    """(1, 2, samples) white noise with the right ear `delay` samples late (the left leads when delay > 0)."""
    x = torch.randn(1, samples + 32, generator=torch.Generator().manual_seed(3))
    return torch.stack([x[:, 16 : 16 + samples], x[:, 16 - delay : 16 - delay + samples]], dim=1)


@pytest.mark.parametrize("delay", [5, -3, 0])
def test_latent_itd_reads_a_known_delay_with_the_conventions_sign(delay):
    """ITD > 0 when the left ear leads (CONVENTIONS.md); a clear delay gets a weight near 1, silence none."""
    from avflow.codecs.interaural_delay import latent_itd

    audio = _delayed_noise(delay)
    itd, weight = latent_itd(audio, 500, max_lag=12)
    assert itd.shape == weight.shape == (1, 16)
    torch.testing.assert_close(itd[0, 1:-1], torch.full((14,), float(delay)), atol=0.1, rtol=0)
    assert (weight[0, 1:-1] > 0.8).all()
    audio[..., 4000:] = 0.0
    _, weight = latent_itd(audio, 500, max_lag=12)
    assert (weight[0, 9:] == 0).all()


@pytest.mark.parametrize("itd", [3.5, -2.0])
def test_delay_ears_renders_the_itd_latent_itd_reads(itd):
    """Delaying the lagging ear of two identical ears by `itd` samples gives back that ITD (linear interpolation of
    the fractional part: within 0.2 sample); the leading ear is untouched."""
    from avflow.codecs.interaural_delay import delay_ears, latent_itd

    same = _delayed_noise(0)
    out = delay_ears(same, torch.full((1, 16), itd), 500)
    read, _ = latent_itd(out, 500, max_lag=12)
    torch.testing.assert_close(read[0, 1:-1], torch.full((14,), itd), atol=0.2, rtol=0)
    leading = 0 if itd > 0 else 1
    assert torch.equal(out[:, leading], same[:, leading])


def test_delay_head_is_antisymmetric_and_decode_applies_it():
    """Swapping the ears negates the predicted ITD; decode delays the lagging ear by it; without a head decode is
    unchanged."""
    from avflow.codecs.interaural_delay import delay_ears

    torch.manual_seed(0)
    config = WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1, latent_channels=4)
    plain = WorldAudioCodec(config)
    with_head = WorldAudioCodec(WorldAudioCodecConfig(**{**config.__dict__, "itd_width": 8}))
    with_head.load_state_dict(plain.state_dict(), strict=False)
    latents = plain.encode(_delayed_noise(4, 4000))
    itd = with_head.itd(latents["left"], latents["right"])
    torch.testing.assert_close(with_head.itd(latents["right"], latents["left"]), -itd)
    base = plain.decode(latents)
    torch.testing.assert_close(with_head.decode(latents), delay_ears(base, itd, plain.samples_per_latent))
    assert plain.itd is None


def test_delay_head_trains_and_keeps_the_checksum(tmp_path):
    """`head_loss` (delay head) falls in a few steps on a fixed delay; a codec saved with a head (decoder-only config
    fields) has the latent checksum of the same codec without one."""
    from avflow.codecs.world import latent_checksum
    from avflow.weights import read_state_dict

    torch.manual_seed(0)
    config = WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1, latent_channels=4)
    plain = WorldAudioCodec(config)
    codec = WorldAudioCodec(WorldAudioCodecConfig(**{**config.__dict__, "itd_width": 16}))
    codec.load_state_dict(plain.state_dict(), strict=False)
    audio = torch.cat([_delayed_noise(6, 4000), _delayed_noise(-6, 4000)])
    opt = torch.optim.Adam(codec.itd.parameters(), 1e-2)
    first = None
    for _ in range(40):
        loss, parts = codec.head_loss(audio)
        first = first if first is not None else parts["itd_mae_us"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["itd_mae_us"] < 0.5 * first
    assert all(p.grad is None for p in codec.enc.parameters())  # the encoder runs without gradients
    with pytest.raises(ConfigError, match="no decoder head"):
        plain.head_loss(audio)
    save_codec(plain, tmp_path / "a", "audio")
    stored = read_state_dict(tmp_path / "a" / "audio.safetensors")
    with torch.no_grad():
        codec.head.weight.add_(1.0)  # a frozen part changed in memory is written as stored
    save_codec(codec, tmp_path / "b", "audio", encoder_state=stored, frozen=("dec.", "head."))
    a, b = (load_world_codecs_audio(tmp_path / n) for n in ("a", "b"))
    assert latent_checksum({"audio": a[0]}, {"audio": a[1]}) == latent_checksum({"audio": b[0]}, {"audio": b[1]})
    assert b[0].itd is not None and a[0].itd is None
    assert all(torch.equal(b[1][k], v) for k, v in a[1].items())  # every stored tensor of the plain codec kept


def load_world_codecs_audio(folder):
    """The audio codec saved in `folder` and its stored tensors (no video codec needed)."""
    import json

    from avflow.config import from_dict
    from avflow.weights import dequantize_int8, load_strict, read_state_dict

    codec = WorldAudioCodec(from_dict(WorldAudioCodecConfig, json.loads((folder / "codecs.json").read_text())["audio"]))
    stored = read_state_dict(folder / "audio.safetensors")
    load_strict(codec, dequantize_int8(stored))
    return codec, stored


def test_frame_curve_is_linear_between_centres_and_held_at_the_ends():
    from avflow.codecs.frame_curves import frame_curve

    curve = frame_curve(torch.tensor([[0.0, 10.0, 4.0]]), hop=10, length=30)
    assert curve.shape == (1, 30)
    assert curve[0, :6].eq(0.0).all() and curve[0, 25:].eq(4.0).all()  # before the first / after the last centre
    torch.testing.assert_close(curve[0, 5:16], torch.arange(11.0))  # centres 5 and 15: 0 -> 10
    assert float(frame_curve(torch.tensor([[2.5]]), 10, 7).sum()) == 2.5 * 7


def test_envelope_head_starts_at_unity_swaps_with_the_ears_and_trains():
    """A new head leaves the decoder's output as it was; swapping the ears swaps its gains; `head_loss` (envelope
    head) falls on a clip whose reconstruction is too quiet; the gains stay within ±envelope_max_db."""
    torch.manual_seed(0)
    config = WorldAudioCodecConfig(width=16, frame_blocks=1, latent_blocks=1, latent_channels=4)
    plain = WorldAudioCodec(config)
    codec = WorldAudioCodec(WorldAudioCodecConfig(**{**config.__dict__, "envelope_width": 16}))
    codec.load_state_dict(plain.state_dict(), strict=False)
    # a rising level, a few dB above what this random decoder makes of it (about 1e-3 RMS whatever the input)
    audio = _delayed_noise(3, 4000) * 0.003 * torch.linspace(0.2, 1.0, 4000)
    latents = plain.encode(audio)
    assert torch.equal(codec.decode(latents), plain.decode(latents))  # zero-initialised last layer: gains of 1
    with torch.no_grad():
        codec.envelope.net[-1].bias.normal_(0.0, 10.0)
    gains = codec.envelope(latents["left"], latents["right"])
    assert gains.shape == (1, 2, 8 * 20)
    torch.testing.assert_close(codec.envelope(latents["right"], latents["left"]), gains.flip(1))
    assert gains.abs().max() <= 24.0 * np.log(10) / 20 + 1e-6  # within ±envelope_max_db
    assert not torch.allclose(codec.decode(latents), plain.decode(latents))
    assert torch.equal(codec.decode(latents, gains=False), plain.decode(latents))  # the decoder before its gains
    with torch.no_grad():
        codec.envelope.net[-1].bias.zero_()
    opt = torch.optim.Adam(codec.envelope.parameters(), 1e-2)
    first = codec.head_loss(audio)[1]["envelope_db"]
    for _ in range(30):
        loss, parts = codec.head_loss(audio)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["envelope_db"] < 0.5 * first
    with_stft, parts = codec.head_loss(audio, envelope_stft_weight=0.5)  # the optional spectral term adds on
    assert "envelope_stft" not in codec.head_loss(audio)[1] and parts["envelope_stft"] > 0
    torch.testing.assert_close(with_stft, codec.head_loss(audio)[0] + 0.5 * parts["envelope_stft"])
    with_ild, parts = codec.head_loss(audio, envelope_ild_weight=2.0)  # so does the interaural level term
    assert "envelope_ild_db" not in codec.head_loss(audio)[1] and parts["envelope_ild_db"] > 0
    torch.testing.assert_close(with_ild, codec.head_loss(audio)[0] + 2.0 * parts["envelope_ild_db"] * np.log(10) / 20)
    with pytest.raises(ConfigError, match="no decoder head"):
        plain.head_loss(audio)
    with pytest.raises(ConfigError, match="envelope_hop dividing"):
        WorldAudioCodecConfig(envelope_hop=30)


def test_interaural_level_error_counts_the_loud_frames_only():
    from avflow.codecs.envelope import interaural_level_error

    floor = torch.full((1, 1, 1), 0.01)
    reference = torch.tensor([[[0.0, -1.0, -9.0], [0.0, -2.0, -9.0]]])  # frame 2 below the floor (log 0.01 = -4.6)
    levels = torch.tensor([[[0.5, -1.0, 3.0], [0.0, -1.0, -9.0]]])  # ILD errors 0.5, 1.0 and (not counted) 12
    torch.testing.assert_close(interaural_level_error(levels, reference, floor), torch.tensor(0.75))
    assert float(interaural_level_error(reference, reference, floor)) == 0.0
    quiet = torch.full((1, 2, 3), -9.0)
    assert float(interaural_level_error(levels, quiet, floor)) == 0.0  # no loud frame: nothing to count
    from avflow.train.codec_tasks import DecoderHeadsConfig

    with pytest.raises(ConfigError, match="envelope_ild_weight"):
        DecoderHeadsConfig(envelope_ild_weight=-1.0)


def test_short_synthesis_stft_keeps_the_latent_space_and_reconstructs_exactly():
    """`decoder_hop`/`decoder_n_fft` change the decoder only: same encoder keys, same checksum, same latents; the
    synthesis STFT's inverse gives a signal back exactly (so the head can render any waveform), but for the last half
    window (the trailing frame is dropped, as at the encoder); bad values fail."""
    from avflow.codecs.world import latent_checksum

    short = WorldAudioCodecConfig(**{**SMALL_AUDIO.__dict__, "decoder_hop": 50, "decoder_n_fft": 200})
    torch.manual_seed(0)
    plain, fine = WorldAudioCodec(SMALL_AUDIO), WorldAudioCodec(short)
    encoder = {k: v for k, v in plain.state_dict().items() if k.startswith(plain.encoder_keys)}
    fine.load_state_dict(encoder, strict=False)
    assert latent_checksum({"audio": plain}, {"audio": plain.state_dict()}) == latent_checksum(
        {"audio": fine}, {"audio": fine.state_dict()}
    )
    assert fine.head.out_channels == 2 * (200 // 2 + 1) and fine.dec[-2].weight.shape[-1] == 500 // 50
    audio = torch.randn(2, 2, 4 * fine.samples_per_latent, generator=torch.Generator().manual_seed(2)) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(fine.encode(audio)["left"], plain.encode(audio)["left"])
        assert fine.decode(fine.encode(audio)).shape == audio.shape
        wav = audio.reshape(4, -1)
        spec = fine._stft(wav, synthesis=True)
        assert spec.shape[-1] == wav.shape[-1] // 50
        back = fine._istft(spec, wav.shape[-1])  # the trailing frame is dropped: exact but for the last half window
        torch.testing.assert_close(back[:, :-100], wav[:, :-100], atol=1e-5, rtol=0)
    for bad in ({"decoder_hop": 60}, {"decoder_hop": 50, "decoder_n_fft": 80}, {"decoder_hop": -1}):
        with pytest.raises(ConfigError, match="decoder"):
            WorldAudioCodecConfig(**{**SMALL_AUDIO.__dict__, **bad})


def test_codec_loss_scores_the_reconstruction_as_decoded_and_the_level_term_adds_up():
    """With a delay head, `loss` scores what `decode` returns (the delay applied): its waveform L1 is that of
    decode(encode(x)); `level_weight` adds the 1.6 ms log-level term (part `level_db`, in dB)."""
    config = WorldAudioCodecConfig(**{**SMALL_AUDIO.__dict__, "itd_width": 8, "decoder_hop": 25, "decoder_n_fft": 100})
    torch.manual_seed(0)
    codec = WorldAudioCodec(config)
    with torch.no_grad():
        codec.itd.net[-1].weight.normal_(0.0, 5.0)  # clear delays, so scoring without them would differ
    audio = torch.randn(2, 2, 4 * codec.samples_per_latent, generator=torch.Generator().manual_seed(4)) * 0.1
    plain, parts = codec.loss(audio)
    with torch.no_grad():
        decoded = codec.decode(codec.encode(audio))
        undelayed = codec._istft(codec._decode_spec(codec._encode_ears(audio.reshape(4, -1))), audio.shape[-1])
    assert parts["wave_l1"] == pytest.approx(float((decoded - audio).abs().mean()), rel=1e-5)
    assert abs(float((undelayed.reshape(audio.shape) - audio).abs().mean()) - parts["wave_l1"]) > 1e-6
    full, more = codec.loss(audio, level_weight=0.5)
    assert set(more) == set(parts) | {"level_db"} and more["level_db"] > 0
    assert full.item() == pytest.approx(plain.item() + 0.5 * more["level_db"] * np.log(10) / 20, rel=1e-5)
