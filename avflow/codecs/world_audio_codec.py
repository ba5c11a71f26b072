"""Binaural audio codec for world sounds: stereo waveform <-> `left` and `right` latent streams, each `(B, N, C)`.

Each ear is coded by the same network (so the two streams share one latent space and a left/right mirror of the
scene mirrors the streams). The way back to a waveform is learned and needs no Griffin-Lim: the decoder predicts
the complex STFT (compressed real and imaginary parts per bin, as Vocos does) and an inverse STFT makes the samples,
so onsets are carried by predicted phase. Decoder heads that read both ears' latents add what the per-ear decoder
cannot render: the interaural delay (`interaural_delay.py`, `itd_width`) and, optionally, per-ear gains
(`envelope.py`, `envelope_width`); their config fields are decoder-only (`decoder_fields`), so adding or retraining
them leaves the latent space and its checksum as they are.

Layout: STFT frames at `hop` samples (centred Hann window of `n_fft`), `latent_stride` frames per latent, so
N = samples / (hop * latent_stride) latents per ear (16 kHz, hop 125, stride 4: 32 latents/s, 500 samples each,
so a 16 fps video frame spans exactly 2 latents).
Inputs must be a whole number of latents long, floating (cast to the weights' dtype; integer samples are an error)
and finite. Latents are deterministic; `latent_scale` makes them unit-variance.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.codecs.envelope import EnvelopeHead, apply_gains, envelope_floor, interaural_level_error, log_envelope
from avflow.codecs.interaural_delay import InterauralDelayHead, delay_ears, latent_itd
from avflow.errors import ConfigError

STREAMS = ("left", "right")
INTERAURAL_STFTS = ((128, 32), (512, 128))  # (n_fft = window, hop) in samples: 8 ms and 32 ms windows at 16 kHz
FINE_STFTS = ((64, 16), (128, 32), (256, 64))  # (n_fft = window, hop): 4-16 ms windows, 1-4 ms hops at 16 kHz
LEVEL_HOP = 25  # samples per level frame of `loss(level_weight=...)` (16 kHz: 1.6 ms)
LEVEL_FLOOR_DB = 20.0  # levels below the clip's loudest frame by more than this count as this (default)
PRE_ECHO_FRAMES = 5  # `pre_echo_error`: level frames (7.8 ms at 16 kHz) ahead in which an attack is looked for
PRE_ECHO_RISE_DB = 10.0  # ... and the rise of the input's level that makes one
PRE_ECHO_FLOOR_DB = 50.0  # levels floored this far below the clip's loudest frame (a pre-echo is 15-30 dB under it)


@dataclass(frozen=True, kw_only=True)
class WorldAudioCodecConfig:
    sample_rate: int = 16000
    n_fft: int = 500
    hop: int = 125  # STFT hop in samples (16 kHz: 128 frames/s; 4 per latent: 32 latents/s, 2 per 16 fps frame)
    latent_stride: int = 4  # STFT frames per latent
    latent_channels: int = 32
    width: int = 128
    frame_blocks: int = 2  # ConvNeXt blocks at the STFT frame rate (encoder and decoder each)
    latent_blocks: int = 2  # ConvNeXt blocks at the latent rate (encoder and decoder each)
    input_power: float = 0.3  # encoder input: |X|^p e^{i phase} (compresses the dynamic range, keeps phase)
    head: str = "cartesian"  # decoder output: "cartesian" (compressed real, imag) or "polar" (log magnitude, phase)
    latent_l2: float = 1e-4
    complex_weight: float = 1.0  # L1 on the power-compressed complex spectrum (phase-aware: timing and ITD)
    stft_weight: float = 1.0  # multi-resolution STFT loss (spectral convergence + log magnitude, auraloss)
    wave_weight: float = 1.0  # L1 on the waveform
    itd_width: int = 0  # decoder: width of the interaural delay head (`interaural_delay.py`); 0 = none
    itd_max_lag: int = 12  # samples: the largest ITD the head is taught (16 kHz: 0.75 ms, a head is ~0.7 ms wide)
    envelope_width: int = 0  # decoder: width of the per-ear gain head (`envelope.py`); 0 = none
    envelope_hop: int = 25  # samples per gain (16 kHz: 1.6 ms); must divide hop * latent_stride
    envelope_max_db: float = 24.0  # the gains stay within ± this
    decoder_hop: int = 0  # decoder: hop of the synthesis STFT (samples; 0 = hop); must divide hop * latent_stride
    decoder_n_fft: int = 0  # decoder: synthesis window (samples; 0 = n_fft). Shorter ones smear attacks less

    def __post_init__(self) -> None:
        if self.head not in ("cartesian", "polar"):
            raise ConfigError(f"head: must be 'cartesian' or 'polar', got {self.head!r}")
        if self.hop < 1 or self.n_fft < 2 * self.hop or self.latent_stride < 1 or self.latent_channels < 1:
            raise ConfigError(f"audio codec: need n_fft >= 2 hop, hop, latent_stride, latent_channels >= 1: {self}")
        if self.itd_width < 0 or self.itd_max_lag < 1:
            raise ConfigError(f"audio codec: need itd_width >= 0 and itd_max_lag >= 1: {self}")
        if self.envelope_width < 0 or self.envelope_hop < 1 or (self.hop * self.latent_stride) % self.envelope_hop:
            raise ConfigError(f"audio codec: need envelope_width >= 0 and envelope_hop dividing hop * latent_stride "
                              f"({self.hop * self.latent_stride}): {self}")  # fmt: skip
        if self.decoder_hop < 0 or self.decoder_n_fft < 0:
            raise ConfigError(f"audio codec: decoder_hop and decoder_n_fft must be >= 0 (0 = hop, n_fft): {self}")
        if (self.hop * self.latent_stride) % self.synthesis_hop or self.synthesis_n_fft < 2 * self.synthesis_hop:
            per_latent = self.hop * self.latent_stride
            raise ConfigError(f"audio codec: need decoder_hop dividing hop * latent_stride ({per_latent}) "
                              f"and decoder_n_fft >= 2 decoder_hop: {self}")  # fmt: skip
        if not self.envelope_max_db > 0:
            raise ConfigError(f"audio codec: envelope_max_db must be > 0, got {self.envelope_max_db}")

    @property
    def synthesis_hop(self) -> int:
        """The decoder's STFT hop (samples)."""
        return self.decoder_hop or self.hop

    @property
    def synthesis_n_fft(self) -> int:
        """The decoder's STFT window (samples)."""
        return self.decoder_n_fft or self.n_fft


class ConvNeXt1d(nn.Module):
    """Depthwise 7-tap conv, LayerNorm, pointwise MLP (x4), residual. `(B, C, L)` -> `(B, C, L)`."""

    def __init__(self, ch: int):
        super().__init__()
        self.dw = nn.Conv1d(ch, ch, 7, padding=3, groups=ch)
        self.norm = nn.LayerNorm(ch)
        self.mlp = nn.Sequential(nn.Linear(ch, 4 * ch), nn.GELU(), nn.Linear(4 * ch, ch))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.dw(x).transpose(1, 2))  # (B, L, C)
        return x + self.mlp(h).transpose(1, 2)


class WorldAudioCodec(nn.Module):
    """Per-ear STFT encoder -> latents at sample_rate / (hop * latent_stride); decoder -> complex STFT -> iSTFT."""

    streams = STREAMS
    encoder_keys = ("enc.", "latent_scale")  # what defines the latent space
    # config fields the latent space does not depend on (left out of the latent checksum)
    decoder_fields = (
        "itd_width", "itd_max_lag", "envelope_width", "envelope_hop", "envelope_max_db", "decoder_hop", "decoder_n_fft",
    )  # fmt: skip

    def __init__(self, config: WorldAudioCodecConfig | None = None):
        super().__init__()
        self.config = c = config or WorldAudioCodecConfig()
        bins, w, s = c.n_fft // 2 + 1, c.width, c.latent_stride
        up = c.hop * s // c.synthesis_hop  # decoder frames per latent
        self.enc = nn.Sequential(
            nn.Conv1d(2 * bins, w, 3, padding=1), *[ConvNeXt1d(w) for _ in range(c.frame_blocks)],
            nn.Conv1d(w, w, s, stride=s), *[ConvNeXt1d(w) for _ in range(c.latent_blocks)],
            nn.Conv1d(w, c.latent_channels, 1),
        )  # fmt: skip
        self.dec = nn.Sequential(
            nn.Conv1d(c.latent_channels, w, 3, padding=1), *[ConvNeXt1d(w) for _ in range(c.latent_blocks)],
            nn.ConvTranspose1d(w, w, up, stride=up), *[ConvNeXt1d(w) for _ in range(c.frame_blocks)],
        )  # fmt: skip
        self.head = nn.Conv1d(w, 2 * (c.synthesis_n_fft // 2 + 1), 1)  # compressed (real, imag) per synthesis bin
        self.itd = InterauralDelayHead(c.latent_channels, c.itd_width) if c.itd_width else None
        per_latent = c.hop * c.latent_stride // c.envelope_hop
        self.envelope = (
            EnvelopeHead(c.latent_channels, c.envelope_width, per_latent, c.envelope_max_db)
            if c.envelope_width
            else None
        )
        self.register_buffer("window", torch.hann_window(c.n_fft), persistent=False)
        self.register_buffer("synthesis_window", torch.hann_window(c.synthesis_n_fft), persistent=False)
        self.register_buffer("latent_scale", torch.ones(()))

    # --- layout ------------------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def samples_per_latent(self) -> int:
        return self.config.hop * self.config.latent_stride

    @property
    def latent_rate(self) -> float:
        """Latents per second per ear."""
        return self.sample_rate / self.samples_per_latent

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def latent_length(self, samples: int) -> int:
        return samples // self.samples_per_latent

    def _floating(self, x: Tensor, what: str, expected: str) -> Tensor:
        """`x` in the weights' dtype: floating inputs are cast (float64 or bf16 codes as the fp32 weights would),
        integer ones are a one-line error saying what was `expected` (int16 samples are not in [-1, 1])."""
        if not isinstance(x, Tensor):
            raise ConfigError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ConfigError(f"{what} must be {expected}, got {x.dtype}")
        return x.to(self.head.weight.dtype)

    def _check(self, audio: Tensor) -> Tensor:
        """`audio` `(B, 2, samples)`, B >= 1, a positive whole number of latents long, finite; cast to the weights'
        dtype (`_floating`)."""
        audio = self._floating(audio, "audio", "float samples in [-1, 1]")
        if audio.ndim != 3 or audio.shape[1] != 2 or audio.shape[0] < 1:
            raise ConfigError(f"audio must be (B, 2, samples) [left, right] with B >= 1, got {tuple(audio.shape)}")
        if audio.shape[-1] % self.samples_per_latent or audio.shape[-1] == 0:
            raise ConfigError(f"audio length {audio.shape[-1]} is not a positive multiple of {self.samples_per_latent}")
        if not torch.isfinite(audio).all():
            raise ConfigError("audio holds NaN or infinite samples")
        return audio

    def _check_latents(self, latents: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(left, right) of `decode`'s latents, each `(B, N, C)` with B, N >= 1 and C the codec's, floating (cast to
        the weights' dtype)."""
        if not isinstance(latents, Mapping) or set(latents) != set(STREAMS):
            got = sorted(latents) if isinstance(latents, Mapping) else type(latents).__name__
            raise ConfigError(f"decode needs a dict of 'left' and 'right' latents, got {got}")
        left, right = (self._floating(latents[s], f"{s} latents", "float (unit-scale latents)") for s in STREAMS)
        if left.shape != right.shape:
            raise ConfigError(f"decode needs 'left' and 'right' latents of one shape, got {tuple(left.shape)} and "
                              f"{tuple(right.shape)}")  # fmt: skip
        if left.ndim != 3 or min(left.shape[:2], default=0) < 1 or left.shape[-1] != self.latent_channels:
            raise ConfigError(f"latents must be (B, N, {self.latent_channels}) with B, N >= 1, got "
                              f"{tuple(left.shape)}")  # fmt: skip
        return left, right

    # --- per-ear coding ----------------------------------------------------------------------------------------

    def _stft(self, wav: Tensor, synthesis: bool = False) -> Tensor:
        """`(B, samples)` -> complex `(B, bins, samples / hop)` (centred frames; the trailing frame dropped), at the
        encoder's STFT or (`synthesis`) the decoder's."""
        c = self.config
        n_fft, hop = (c.synthesis_n_fft, c.synthesis_hop) if synthesis else (c.n_fft, c.hop)
        window = self.synthesis_window if synthesis else self.window
        spec = torch.stft(wav, n_fft, hop, window=window, center=True, return_complex=True)
        return spec[..., : wav.shape[-1] // hop]

    def _encode_ears(self, wav: Tensor) -> Tensor:
        """`(E, samples)` -> unscaled latents `(E, C, N)`."""
        spec = self._stft(wav)
        x = spec.abs().clamp_min(1e-7).pow(self.config.input_power - 1.0) * spec  # |X|^p e^{i phase}
        return self.enc(torch.cat([x.real, x.imag], dim=1))

    def _decode_spec(self, z: Tensor) -> Tensor:
        """Unscaled latents `(E, C, N)` -> complex synthesis STFT `(E, bins, N * samples_per_latent / decoder hop)`."""
        a, b = self.head(self.dec(z)).float().chunk(2, dim=1)  # fp32 under bf16 autocast: no complex bfloat16
        if self.config.head == "polar":
            return torch.exp(a.clamp(max=5.0)) * torch.exp(1j * b)
        compressed = torch.complex(a, b)  # |X|^p e^{i phase}
        return compressed.abs().clamp_min(1e-7).pow(1.0 / self.config.input_power - 1.0) * compressed

    def _istft(self, spec: Tensor, length: int) -> Tensor:
        c = self.config
        spec = torch.cat([spec, spec[..., -1:]], dim=-1)  # centred frames: one more than samples / hop
        n_fft, hop = c.synthesis_n_fft, c.synthesis_hop
        return torch.istft(spec, n_fft, hop, window=self.synthesis_window, center=True, length=length)

    # --- public API --------------------------------------------------------------------------------------------

    def encode(self, audio: Tensor) -> dict[str, Tensor]:
        """`(B, 2, samples)` [left, right] float -> `{"left": (B, N, C), "right": (B, N, C)}` unit-scale latents.
        Floating audio is cast to the weights' dtype; integer audio is an error."""
        audio = self._check(audio)
        b = audio.shape[0]
        z = self._encode_ears(audio.reshape(2 * b, -1)) / self.latent_scale  # (2B, C, N)
        z = z.transpose(1, 2).reshape(b, 2, -1, z.shape[1])  # (B, 2, N, C)
        return {"left": z[:, 0].contiguous(), "right": z[:, 1].contiguous()}

    def _decode_ears(self, left: Tensor, right: Tensor) -> Tensor:
        """Latents `(B, N, C)` per ear -> `(B, 2, N * samples_per_latent)`: per-ear decoder, then the interaural
        delay (when the codec has the head); the envelope gains are not applied."""
        b, n, _ = left.shape
        z = torch.stack([left, right], dim=1).reshape(2 * b, n, -1).transpose(1, 2) * self.latent_scale
        full = n * self.samples_per_latent
        wav = self._istft(self._decode_spec(z), full).reshape(b, 2, full)
        return self._apply_heads(wav, left, right, gains=False)

    def _apply_heads(self, wav: Tensor, left: Tensor, right: Tensor, gains: bool = True) -> Tensor:
        """The per-ear decoded `wav` `(B, 2, samples)` through the interaural delay and (`gains`) the envelope."""
        if self.itd is not None:
            wav = delay_ears(wav, self.itd(left, right), self.samples_per_latent)
        if gains and self.envelope is not None:
            wav = apply_gains(wav, self.envelope(left, right), self.config.envelope_hop)
        return wav

    def decode(self, latents: dict[str, Tensor], length: int | None = None, *, gains: bool = True) -> Tensor:
        """`{"left", "right"}` each `(B, N, C)` -> waveform `(B, 2, length or N * samples_per_latent)`: cut to
        `length`, or zero-padded to it where longer (`length >= 0`); `gains=False` leaves out the envelope head's gains
        (what the head starts from, e.g. to measure what gains can do). Floating latents are cast to the weights'
        dtype."""
        if length is not None and (isinstance(length, bool) or not isinstance(length, Integral) or length < 0):
            raise ConfigError(f"decode: length must be an int >= 0 (samples), got {length!r}")
        left, right = self._check_latents(latents)
        wav = self._decode_ears(left, right)
        full = wav.shape[-1]
        if gains and self.envelope is not None:
            wav = apply_gains(wav, self.envelope(left, right), self.config.envelope_hop)
        if length is not None:
            wav = wav[..., :length] if length <= full else F.pad(wav, (0, length - full))
        return wav

    def loss(
        self,
        audio: Tensor,
        *,
        interaural_weight: float = 0.0,
        fine_stft_weight: float = 0.0,
        level_weight: float = 0.0,
        level_floor_db: float = LEVEL_FLOOR_DB,
        pre_echo_weight: float = 0.0,
    ) -> tuple[Tensor, dict[str, float]]:
        """Complex-spectrum L1 (at the synthesis STFT) + multi-resolution STFT + waveform L1 + latent L2, per ear, of
        the reconstruction as `decode` makes it (through the decoder heads the codec has, which are meant to be
        frozen then); optionally (training settings, not part of the codec's config, so a decoder trained further
        keeps the latent checksum):

        - `interaural_weight` x L1 between the power-compressed interaural cross-spectra `X_L X_R^*` of the
          reconstruction and the input, `|C|^(p-1) C`, at short STFTs (`INTERAURAL_STFTS`): the phase difference
          (ITD) and level ratio (ILD) of every time-frequency cell, weighted by its energy;
        - `fine_stft_weight` x auraloss's multi-resolution STFT loss at short windows (`FINE_STFTS`): log magnitudes
          every 1-4 ms, so energy before an onset (pre-echo of the long synthesis window) costs;
        - `level_weight` x mean |log short-time RMS difference| per ear and `LEVEL_HOP` samples, both floored
          `level_floor_db` below the clip's loudest frame (`envelope.log_envelope`): the level of every attack (and,
          with a low floor, the pre-echo before it);
        - `pre_echo_weight` x `pre_echo_error`: the mean |log level difference| per ear in the 8 ms before each
          attack, where a synthesis window smears energy ahead of it (which moves its onset early); quiet stretches
          elsewhere (the ambience no decoder can match sample by sample) are left to the other terms.
        """
        audio = self._check(audio)
        c = self.config
        wav = audio.reshape(-1, audio.shape[-1])  # (2B, samples)
        z = self._encode_ears(wav)  # (2B, C, N)
        spec = self._decode_spec(z)
        rec = self._istft(spec, wav.shape[-1])
        if self.itd is not None or self.envelope is not None:
            scaled = (z / self.latent_scale).transpose(1, 2).unflatten(0, (-1, 2))  # (B, 2, N, C)
            rec = self._apply_heads(rec.reshape(audio.shape), scaled[:, 0], scaled[:, 1]).reshape(wav.shape)
            spec = self._stft(rec, synthesis=True)
        target = self._stft(wav, synthesis=True)

        def compress(s: Tensor) -> Tensor:
            return s.abs().clamp_min(1e-7).pow(c.input_power - 1.0) * s

        complex_l1 = (compress(spec) - compress(target)).abs().mean()
        stft = _multi_resolution_stft_loss()(rec[:, None], wav[:, None])
        wave = (rec - wav).abs().mean()
        total = c.complex_weight * complex_l1 + c.stft_weight * stft + c.wave_weight * wave
        total = total + c.latent_l2 * z.square().mean()
        parts = {"complex_l1": complex_l1.item(), "stft": stft.item(), "wave_l1": wave.item()}
        if interaural_weight:
            interaural = interaural_l1(rec.reshape(audio.shape), audio, c.input_power)
            total = total + interaural_weight * interaural
            parts["interaural"] = interaural.item()
        if fine_stft_weight:
            fine = _multi_resolution_stft_loss(FINE_STFTS)(rec[:, None], wav[:, None])
            total = total + fine_stft_weight * fine
            parts["fine_stft"] = fine.item()
        if level_weight:
            pair_rec, pair_ref = rec.reshape(audio.shape), audio
            floor = envelope_floor(pair_ref, LEVEL_HOP, level_floor_db)
            level = (log_envelope(pair_rec, LEVEL_HOP, floor) - log_envelope(pair_ref, LEVEL_HOP, floor)).abs().mean()
            total = total + level_weight * level
            parts["level_db"] = level.item() * 20 / math.log(10)
        if pre_echo_weight:
            pre = pre_echo_error(rec.reshape(audio.shape), audio, PRE_ECHO_FLOOR_DB)
            total = total + pre_echo_weight * pre
            parts["pre_echo_db"] = pre.item() * 20 / math.log(10)
        return total, parts

    def head_loss(
        self,
        audio: Tensor,
        *,
        itd_beta: float = 0.5,
        floor_db: float = 50.0,
        envelope_stft_weight: float = 0.0,
        envelope_ild_weight: float = 0.0,
    ) -> tuple[Tensor, dict[str, float]]:
        """The decoder heads the codec has, against `audio` `(B, 2, samples)`, everything else without gradients:

        - interaural delay: smooth L1 (`itd_beta` samples) to the ITD of the input at every latent
          (`interaural_delay.latent_itd`), weighted by how clear and loud it is; part `itd_mae_us`: that weighted
          mean |error| in µs, `itd_mae_us_no_delay`: the same for rendering no delay;
        - envelope: mean |log RMS| difference per ear and `envelope_hop` frame between the gained reconstruction
          (after the delay head, as decoded) and the input, both floored `floor_db` below the clip's loudest frame;
          parts `envelope_db` and `envelope_db_no_gains` (the same in dB, with and without the gains); plus
          `envelope_stft_weight` x auraloss's multi-resolution STFT loss of the gained ears against the input (part
          `envelope_stft`), so the gains do not reshape the spectrum while they level the attacks; plus
          `envelope_ild_weight` x the mean |difference| of the interaural level difference (log RMS left − right) per
          frame, over the frames where either ear of the input is above the floor (part `envelope_ild_db`, and
          `envelope_ild_db_no_gains`), so the gains are asked for the level difference between the ears directly.

        The loss is the sum of the heads' terms."""
        audio = self._check(audio)
        if self.itd is None and self.envelope is None:
            raise ConfigError("head_loss: this codec has no decoder head (itd_width and envelope_width are 0)")
        with torch.no_grad():
            latents = self.encode(audio)
        left, right = latents["left"], latents["right"]
        total, parts = audio.new_zeros(()), {}
        if self.itd is not None:
            with torch.no_grad():
                target, weight = latent_itd(audio, self.samples_per_latent, self.config.itd_max_lag)
            pred = self.itd(left, right)  # (B, N)
            norm = weight.sum().clamp_min(1e-8)
            total = total + (F.smooth_l1_loss(pred, target, reduction="none", beta=itd_beta) * weight).sum() / norm
            to_us = 1e6 / self.sample_rate
            parts["itd_mae_us"] = float(((pred.detach() - target).abs() * weight).sum() / norm) * to_us
            parts["itd_mae_us_no_delay"] = float((target.abs() * weight).sum() / norm) * to_us
        if self.envelope is not None:
            hop = self.config.envelope_hop
            with torch.no_grad():
                plain = self._decode_ears(left, right)
                floor = envelope_floor(audio, hop, floor_db)
                reference = log_envelope(audio, hop, floor)
            gained = apply_gains(plain, self.envelope(left, right), hop)
            levels = log_envelope(gained, hop, floor)  # (B, 2, K)
            plain_levels = log_envelope(plain, hop, floor)  # no gradient: the frozen decoder's
            envelope = (levels - reference).abs().mean()
            total = total + envelope
            to_db = 20 / math.log(10)
            if envelope_ild_weight:
                ild = interaural_level_error(levels, reference, floor)
                total = total + envelope_ild_weight * ild
                parts["envelope_ild_db"] = float(ild.detach()) * to_db
                unity = interaural_level_error(plain_levels, reference, floor)
                parts["envelope_ild_db_no_gains"] = float(unity) * to_db
            if envelope_stft_weight:
                n = gained.shape[-1]
                stft = _multi_resolution_stft_loss()(gained.reshape(-1, 1, n), audio[..., :n].reshape(-1, 1, n))
                total = total + envelope_stft_weight * stft
                parts["envelope_stft"] = float(stft.detach())
            parts["envelope_db"] = float(envelope.detach()) * to_db
            parts["envelope_db_no_gains"] = float((plain_levels - reference).abs().mean()) * to_db
        return total, parts

    @torch.no_grad()
    def fit_latent_scale(self, audio: Tensor) -> float:
        """Set `latent_scale` to the std of the unscaled latents of `audio` `(B, 2, samples)`."""
        audio = self._check(audio)
        z = self._encode_ears(audio.reshape(-1, audio.shape[-1]))
        self.latent_scale.fill_(float(z.std()) or 1.0)
        return float(self.latent_scale)


def pre_echo_error(pred: Tensor, target: Tensor, floor_db: float) -> Tensor:
    """Mean of `|log level of pred − log level of target|` (natural log; RMS per `LEVEL_HOP` samples, both floored
    `floor_db` below the target's loudest frame) over the frames before an attack: those the target's level rises
    from by at least `PRE_ECHO_RISE_DB` within the next `PRE_ECHO_FRAMES` frames. Both signs count: with the excess
    alone a decoder learns to fall silent before each attack (16 dB under the input, docs/codecs.md). `pred`,
    `target`: `(B, 2, T)`."""
    floor = envelope_floor(target, LEVEL_HOP, floor_db)
    ref, rec = log_envelope(target, LEVEL_HOP, floor), log_envelope(pred, LEVEL_HOP, floor)  # (B, 2, K)
    k = ref.shape[-1]
    padded = torch.cat([ref, ref[..., -1:].expand(*ref.shape[:-1], PRE_ECHO_FRAMES)], dim=-1)
    ahead = padded.unfold(-1, PRE_ECHO_FRAMES, 1)[..., 1 : k + 1, :].amax(-1)  # (B, 2, K) loudest of the next frames
    before = (ahead - ref > PRE_ECHO_RISE_DB * math.log(10) / 20).float()
    return ((rec - ref).abs() * before).sum() / before.sum().clamp_min(1.0)


def interaural_l1(pred: Tensor, target: Tensor, power: float, stfts=INTERAURAL_STFTS) -> Tensor:
    """Mean over `stfts` of the L1 between compressed cross-spectra `|C|^(p-1) C`, `C = X_L X_R^*` (Hann windows),
    of `pred` and `target`, both `(B, 2, samples)` [left, right]."""
    total = pred.new_zeros(())
    for n_fft, hop in stfts:
        window = torch.hann_window(n_fft, device=pred.device)
        x = torch.stft(torch.cat([pred, target]).flatten(0, 1), n_fft, hop, window=window, return_complex=True)
        x = x.unflatten(0, (2, -1, 2))  # (pred/target, B, ear, bins, frames)
        cross = x[:, :, 0] * x[:, :, 1].conj()  # (2, B, bins, frames)
        cross = cross.abs().clamp_min(1e-7).pow(power - 1.0) * cross
        total = total + (cross[0] - cross[1]).abs().mean()
    return total / len(stfts)


def check_auraloss(what: str) -> None:
    """A one-line ConfigError unless auraloss (the [train] extra), which the training losses' multi-resolution STFT
    term needs, can be imported (found, not imported: cheap); `what` names what needs it. Encoding and decoding never
    need it, so a training task checks when it is built, before the model and the data."""
    if importlib.util.find_spec("auraloss") is None:
        raise ConfigError(f"{what} needs the [train] extra (auraloss, the multi-resolution STFT loss): pip install "
                          "'avflow[train]'")  # fmt: skip


def _multi_resolution_stft_loss(stfts: tuple[tuple[int, int], ...] | None = None) -> nn.Module:
    """auraloss's multi-resolution STFT loss (spectral convergence + log magnitude): its 3 default resolutions, or
    `stfts` as (n_fft = window, hop) pairs. The extra is checked on every call, not only on the first build, so a
    loss made before auraloss went missing is no way around the one-line error."""
    check_auraloss("the audio codec's training loss")
    return _built_stft_loss(stfts)


@cache
def _built_stft_loss(stfts: tuple[tuple[int, int], ...] | None) -> nn.Module:
    """The loss module of `_multi_resolution_stft_loss`, built once per resolution set."""
    from auraloss.freq import MultiResolutionSTFTLoss

    if stfts is None:
        return MultiResolutionSTFTLoss()
    return MultiResolutionSTFTLoss(
        fft_sizes=[n for n, _ in stfts], hop_sizes=[h for _, h in stfts], win_lengths=[n for n, _ in stfts]
    )
