"""Build clips whose sounds are real recordings, with exact ground truth, for the sync and side metrics.

Sounds: the recordings of Debian's `sound-theme-freedesktop` (bells, clicks, a camera shutter, chimes: Ogg Vorbis,
read with soundfile) and words spoken by `espeak-ng`; `make real-sound-deps` installs both. Each clip (mp4: h264 +
AAC, like a user's file) shows a dim background with 2-3 discs drifting slowly, each kept on one side of the frame;
at every event a disc flashes (1-5 frames; a fade-in and a fade-out are drawn as intermediate frames), a disc pops
into view (and later leaves silently), or, rarely, the whole frame flashes. Each event plays a sound made of up to
three onsets within 300 ms (copies of one recording, or a recording that has several onsets itself), placed from
the event's azimuth with the world's binaural renderer (`avflow.world.binaural.render_sphere`). The whole track is
then shifted by one offset per clip, uniform in ±250 ms.

Ground truth in `{id}.json`: `offset_ms` (t_audio − t_visual, positive = audio late), `fps`, `duration`, and per event
`time` (the visual event: start of its first frame), `audio_time`, `kind`, `frames`, `side` (`left`/`right`, absent
for a full-frame flash), `azimuth` (degrees, negative = left), `x` (px), `sounds` and `onsets` (s after audio_time).

    python scripts/make_real_sound_set.py --out data/real_sound --n 40 --seed 1 [--wav]

The media are built when needed (benchmarks, slow tests) and never committed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, resample_poly

from avflow.cli import Parser
from avflow.data.media import write_video
from avflow.world.binaural import BLOCK, render_sphere

SOUND_DIR = Path("/usr/share/sounds/freedesktop/stereo")
WORDS = ("tick", "pop", "bang", "go", "clap", "yes", "hey", "tock", "knock knock", "ta ta", "one two", "stop")
FPS_CHOICES = (16.0, 20.0, 24.0, 25.0, 30000 / 1001, 30.0)
MAX_SOUND_S = 0.45  # each recording is cut to this (40 ms fade-out) so events do not overlap much
SIDES = {"left": (0.08, 0.38), "right": (0.62, 0.92)}  # x ranges (fraction of the width) of each side's discs


@dataclass
class Disc:
    side: str
    colour: np.ndarray  # (3,) float
    radius: float  # px
    x0: float
    y0: float
    vx: float  # px / s
    vy: float
    visible_from: float = 0.0  # s
    visible_until: float = 1e9

    def at(self, t: float) -> tuple[float, float]:
        return self.x0 + self.vx * t, self.y0 + self.vy * t


def check_packages() -> None:
    """One-line error when the Debian packages are missing."""
    missing = [p for p, ok in (("sound-theme-freedesktop", SOUND_DIR.is_dir()),
                                ("espeak-ng", shutil.which("espeak-ng") is not None)) if not ok]  # fmt: skip
    if missing:
        sys.exit(f"make_real_sound_set: missing Debian package(s) {', '.join(missing)}: run `make real-sound-deps` "
                 f"(or apt-get install -y {' '.join(missing)})")  # fmt: skip


def trim(sound: np.ndarray, sr: int) -> np.ndarray:
    """Mono, from the first millisecond within 40 dB of the loudest one, at most MAX_SOUND_S with a 40 ms fade-out."""
    frame = max(1, sr // 1000)
    n = sound.size // frame
    rms = np.sqrt((sound[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    start = int(np.argmax(rms >= rms.max() * 10 ** (-40 / 20))) * frame
    out = sound[start : start + int(MAX_SOUND_S * sr)].copy()
    fade = min(out.size, int(0.04 * sr))
    out[out.size - fade :] *= np.linspace(1.0, 0.0, fade)
    return out / (np.abs(out).max() + 1e-12)


def load_sounds(sr: int, workdir: Path) -> dict[str, np.ndarray]:
    """name -> mono recording at ``sr``, trimmed."""
    sounds: dict[str, np.ndarray] = {}
    for path in sorted(SOUND_DIR.glob("*.oga")):
        data, rate = sf.read(path, always_2d=True)
        g = np.gcd(rate, sr)
        sounds[path.name] = trim(resample_poly(data.mean(axis=1), sr // g, rate // g), sr)
    for word in WORDS:
        wav = workdir / f"{word.replace(' ', '_')}.wav"
        subprocess.run(["espeak-ng", "-s", "190", "-w", str(wav), word], check=True, capture_output=True)
        data, rate = sf.read(wav, always_2d=True)
        g = np.gcd(rate, sr)
        sounds[f"espeak:{word}"] = trim(resample_poly(data.mean(axis=1), sr // g, rate // g), sr)
    return sounds


def event_sound(rng: np.random.Generator, sounds: dict[str, np.ndarray], sr: int) -> tuple[np.ndarray, list, list]:
    """One event's mono sound: 1-3 copies of recordings, onsets within 300 ms. Returns (sound, names, onsets s)."""
    names = list(sounds)
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    onsets = [0.0]
    while len(onsets) < n:
        nxt = onsets[-1] + rng.uniform(0.06, 0.15)
        if nxt > 0.3:
            break
        onsets.append(float(nxt))
    same = rng.random() < 0.5
    first = names[int(rng.integers(len(names)))]
    picks = [first if same else names[int(rng.integers(len(names)))] for _ in onsets]
    picks[0] = first
    out = np.zeros(int((0.3 + MAX_SOUND_S) * sr) + 1)
    for j, (name, t) in enumerate(zip(picks, onsets)):
        s = sounds[name] * (1.0 if j == 0 else 10 ** (rng.uniform(-6, 3) / 20))
        k = int(round(t * sr))
        out[k : k + s.size] += s
    return out, picks, onsets


def disc_alpha(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased coverage of a disc on the pixel grid: (H, W) in [0, 1]."""
    return np.clip(r + 0.5 - np.hypot(xs - cx, ys - cy), 0.0, 1.0)


def flash_envelope(rng: np.random.Generator, n: int) -> tuple[np.ndarray, bool, bool]:
    """Per-frame flash intensity over ``n`` frames: optional fade-in (first frame 40-70 %) and fade-out."""
    env = np.ones(n)
    fade_in = n >= 2 and rng.random() < 0.3
    fade_out = n >= 2 and rng.random() < 0.5
    if fade_in:
        env[0] = rng.uniform(0.4, 0.7)
    if fade_out:
        k = n - (1 if fade_in else 0)
        env[n - k + 1 :] = np.linspace(1.0, 0.25, k)[1:]
    return env, fade_in, fade_out


def make_clip(seed: int, sounds: dict[str, np.ndarray], sr: int, width: int = 128, height: int = 96) -> tuple:
    """(frames (T, H, W, 3) uint8, fps, audio (2, N) float32, ground truth dict)."""
    rng = np.random.default_rng(seed)
    fps = float(rng.choice(FPS_CHOICES))
    duration = float(rng.uniform(4.0, 6.0))
    T = int(round(duration * fps))
    duration = T / fps
    offset = float(rng.uniform(-0.25, 0.25))
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    # background: a dim vertical gradient with a smooth static texture
    top, bottom = rng.uniform(10, 60, 3), rng.uniform(10, 60, 3)
    rows = (np.arange(height) / (height - 1))[:, None, None]
    texture = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((height, width))) * np.exp(
        -0.5 * (np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.rfftfreq(width), indexing="ij")) / 0.05) ** 2),
        s=(height, width))  # fmt: skip
    texture = 8.0 * texture / (texture.std() + 1e-9)
    background = top * (1 - rows) + bottom * rows + texture[..., None]  # (H, W, 3)
    # events: visual times on frame starts, at least 0.75 s apart, audio inside the clip
    lo = max(0.2, 0.15 - offset)
    hi = min(duration - 0.3, duration - 0.55 - offset)
    times: list[int] = []
    for _ in range(200):
        if len(times) >= int(rng.integers(2, 6)):
            break
        k = int(np.ceil(rng.uniform(lo, hi) * fps))
        if k / fps <= hi and all(abs(k - j) / fps >= 0.75 for j in times):
            times.append(k)
    times.sort()
    discs: list[Disc] = []

    def new_disc(side: str, start: float = 0.0, until: float = 1e9) -> Disc | None:
        """A disc on ``side`` that never overlaps another one while both are seen (None if there is no room)."""
        a, b = SIDES[side]
        probe = np.linspace(start, min(until, duration), 24)
        for _ in range(100):
            r = float(rng.uniform(0.05, 0.08) * width)
            x0 = float(rng.uniform(a * width + r, b * width - r))
            vx = float(rng.uniform(-1, 1) * min(x0 - a * width - r, b * width - r - x0) / duration)
            y0 = float(rng.uniform(0.3, 0.7) * height)
            vy = float(rng.uniform(-0.1, 0.1) * height / duration)
            colour = rng.uniform(40, 120, 3)
            colour[int(rng.integers(3))] = rng.uniform(130, 190)  # one clear channel, so a pop-in shows
            disc = Disc(side, colour, r, x0 - vx * start, y0 - vy * start, vx, vy, start, until)
            if all(
                np.hypot(*np.subtract(disc.at(t), d.at(t))) > r + d.radius + 3
                for d in discs
                for t in probe
                if d.visible_from <= t < d.visible_until
            ):
                return disc
        return None

    sides = [str(s) for s in rng.permutation(list(SIDES))[: int(rng.integers(1, 3))]]
    for side in sides + ([str(rng.choice(list(SIDES)))] if len(sides) == 1 or rng.random() < 0.5 else []):
        disc = new_disc(side)
        discs += [disc] if disc is not None else []
    flashes: dict[int, list[tuple[int, float]]] = {}  # frame -> [(disc, intensity)]
    global_flash = np.zeros(T)
    appear_alpha: dict[int, dict[int, float]] = {}  # disc -> {frame: alpha} for fade-ins of appearing discs
    events, mono_tracks = [], []
    for k in times:
        t = k / fps
        kind = str(rng.choice(["flash", "appear", "global"], p=[0.7, 0.2, 0.1]))
        n_frames = int(rng.integers(1, 6))
        fade_in = fade_out = False
        if kind == "appear":
            disc = new_disc(str(rng.choice(list(SIDES))), start=t, until=t + float(rng.uniform(0.5, 1.5)))
            kind = "flash" if disc is None else kind  # no room for one more disc
        if kind == "flash":
            visible = [j for j, d in enumerate(discs) if d.visible_from < t and t + 5 / fps < d.visible_until]
            j = int(rng.choice(visible))
            env, fade_in, fade_out = flash_envelope(rng, n_frames)
            for i, e in enumerate(env):
                if k + i < T:
                    flashes.setdefault(k + i, []).append((j, float(e)))
            disc = discs[j]
        elif kind == "appear":
            discs.append(disc)
            j = len(discs) - 1
            fade_in = rng.random() < 0.3
            if fade_in:
                appear_alpha[j] = {k: float(rng.uniform(0.4, 0.7))}
            n_frames = 0
        else:
            env, fade_in, fade_out = flash_envelope(rng, min(n_frames, 2))
            global_flash[k : k + env.size] = env[: T - k]
            n_frames = env.size
            disc = None
        sound, names, onsets = event_sound(rng, sounds, sr)
        sound *= 10 ** (rng.uniform(-12, 0) / 20)
        ev = {"time": t, "audio_time": t + offset, "kind": kind, "frames": n_frames, "fade_in": bool(fade_in),
              "fade_out": bool(fade_out), "sounds": names, "onsets": onsets}  # fmt: skip
        azimuth = 0.0
        if disc is not None:
            x, _ = disc.at(t)
            azimuth = (x / width - 0.5) * 90.0
            ev |= {"side": disc.side, "azimuth": azimuth, "x": x}
        events.append(ev)
        mono_tracks.append((t + offset, sound, azimuth))
    # frames
    frames = np.empty((T, height, width, 3), dtype=np.uint8)
    for k in range(T):
        t = k / fps
        img = background.copy()
        for j, d in enumerate(discs):
            if not d.visible_from <= t < d.visible_until:
                continue
            cx, cy = d.at(t)
            alpha = disc_alpha(xs, ys, cx, cy, d.radius)[..., None] * appear_alpha.get(j, {}).get(k, 1.0)
            colour = d.colour.copy()
            for jj, e in flashes.get(k, []):
                if jj == j:
                    colour = colour + (255.0 - colour) * 0.9 * e
            img = img * (1 - alpha) + colour * alpha
        img = img + global_flash[k] * (235.0 - img) * 0.8 + rng.normal(0, 1.5, img.shape)
        frames[k] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    # audio: each event placed from its azimuth, then pink-ish noise
    N = int(round(duration * sr))
    audio = np.zeros((2, N))
    for start, sound, azimuth in mono_tracks:
        n0 = int(round(start * sr))
        src = np.zeros(N)
        seg = sound[: max(0, N - n0)]
        src[n0 : n0 + seg.size] = seg
        audio += render_sphere(src, np.full(int(np.ceil(N / BLOCK)), azimuth), sr)
    noise = lfilter([1.0], [1.0, -0.9], rng.standard_normal((2, N)), axis=1)  # pink-ish room noise
    noise *= 10 ** (rng.uniform(-55, -45) / 20) / np.sqrt((noise**2).mean())
    audio += noise
    audio *= 0.9 / max(0.9, float(np.abs(audio).max()))
    truth = {"seed": seed, "fps": fps, "duration": duration, "width": width, "height": height, "sample_rate": sr,
             "offset_ms": 1000.0 * offset, "events": events,
             "sounds_from": ["sound-theme-freedesktop", "espeak-ng"]}  # fmt: skip
    return frames, fps, audio.astype(np.float32), truth


def check_out(parser: argparse.ArgumentParser, out: Path, settings: dict) -> None:
    """Make --out (or refuse it in one line, before any clip): it must be writable, and a folder holding a set must
    hold this one (its set.json: seed, n, sample rate), so that two runs never mix two sets; the same settings again
    rebuild it in place."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        parser.error(f"--out {out}: cannot write there ({exc.strerror or exc})")
    record, seed = out / "set.json", settings["seed"]
    if record.is_file():
        try:
            made = json.loads(record.read_text())
        except ValueError:
            parser.error(f"--out {out}: its set.json is not JSON (remove the folder, or give another --out)")
        differ = [f"{k} {settings[k]} (the folder's: {made.get(k)})" for k in settings if made.get(k) != settings[k]]
        if differ:
            parser.error(f"--out {out} holds a set made with other settings: {', '.join(differ)}; give another --out")
    elif others := sorted(c.name for c in out.glob("real_*.json") if not c.name.startswith(f"real_{seed:03d}_")):
        parser.error(f"--out {out} holds clips of another seed ({others[0]}, ...); give another --out")
    record.write_text(json.dumps(settings, indent=1) + "\n")


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for {id}.mp4 + {id}.json")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="clip i uses seed·100000 + i")
    parser.add_argument("--sample-rate", type=int, default=48000)
    parser.add_argument("--wav", action="store_true", help="also write the lossless {id}.wav (read instead of AAC)")
    args = parser.parse_args()
    if args.n < 1:
        parser.error(f"--n: give >= 1 clips (got {args.n})")
    if args.sample_rate < 8000:
        parser.error(f"--sample-rate: give >= 8000 Hz (got {args.sample_rate})")
    if args.seed < 0:
        parser.error(f"--seed: give >= 0 (got {args.seed})")
    out = Path(args.out)
    check_packages()
    check_out(parser, out, {"seed": args.seed, "n": args.n, "sample_rate": args.sample_rate})
    with tempfile.TemporaryDirectory() as tmp:
        sounds = load_sounds(args.sample_rate, Path(tmp))
    for i in range(args.n):
        cid = f"real_{args.seed:03d}_{i:04d}"
        frames, fps, audio, truth = make_clip(args.seed * 100000 + i, sounds, args.sample_rate)
        truth["id"] = cid
        write_video(out / f"{cid}.mp4", frames, fps, audio, args.sample_rate)
        if args.wav:
            sf.write(out / f"{cid}.wav", audio.T, args.sample_rate, subtype="FLOAT")
        (out / f"{cid}.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"wrote {args.n} clips to {out}")


if __name__ == "__main__":
    main()
