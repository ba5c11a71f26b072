"""Seeded outputs of the user-facing paths are bit-identical to the ones recorded in tests/data/refactor_reference.json.

Covers `avflow generate` with the shipped default model (t2av with the model's default guidance and with --cfg, a2v,
v2a, continue, a windowed 5 s a2v) and the demo's measures, `avflow binaural` (model and spatialise), tiny-config
foley (windowed video-to-audio with a negative prompt, t2a), the guidance presets of the experiments and every fusion
variant's velocity. Outputs are compared by sha256 of their bytes, so any change of numerics fails. Bit-identity only
holds on the platform the reference was recorded on (same torch / numpy / PyAV builds, CPU model and kernels, one
torch thread); elsewhere the test is skipped with the command below.

The generate cases belong to the shipped default model: the first model's were dropped with its format, and those of
the v2 model are recorded once its weights are in avflow/assets/default_model (until then they are not compared;
afterwards the test fails until they are recorded):
    python tests/test_refactor_reference.py --write-generate   # adds the generate cases, keeps the others

Regenerate the whole reference (only when the shipped weights are retrained or the numerics change on purpose):
    python tests/test_refactor_reference.py --write
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parent
# Regenerate with `python tests/test_refactor_reference.py --write` when the shipped weights are retrained on purpose.
REFERENCE = TESTS / "data" / "refactor_reference.json"
SR = 16000


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo): two CPUs of one instruction set can take different kernel paths
    (an AMD EPYC and an Intel Xeon, both AVX512, differ in the last bits), so bit-identity is per CPU model."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def platform_key() -> dict[str, str]:
    import av

    return {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "numpy": np.__version__,
        "av": av.__version__,
    }


def digest(x) -> dict:
    """Shape, dtype and sha256 of an array's bytes."""
    a = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x))
    return {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


def read_wav(path: Path) -> np.ndarray:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == SR
    return data


# ---------------------------------------------------------------------------------------------------------------


def generate_cases(work: Path) -> dict:
    """The shipped default model (v2), as `avflow generate` and `avflow demo` call it: every task, and a windowed
    input longer than the model's length."""
    from helpers import sweep_video_frames

    from avflow.data.media import write_audio, write_video
    from avflow.pipelines.default_model import load_default_model

    pipe = load_default_model()
    two = pipe.sampling.override(steps=2)
    out = {}

    def record(name: str, clip) -> None:
        out[name] = {"frames": digest(clip.frames), "audio": digest(clip.audio), "windows": clip.windows}

    record("generate_t2av", pipe.generate("a red rubber ball bounces on the left", seed=3, sampling=two, duration=1.0))
    cfg2 = two.override(cfg_strength=2.0)
    record("generate_t2av_cfg2", pipe.generate("a blue ball rolls to the right", seed=1, sampling=cfg2, duration=0.5))
    t = np.arange(int(0.6 * SR)) / SR
    bursts = (np.sin(2 * np.pi * 440 * t) * np.exp(-20 * (t % 0.25))).astype(np.float32)[None]
    wav = write_audio(work / "a2v.wav", bursts, SR)
    record("generate_a2v", pipe.generate("a ball", seed=2, sampling=two, task="a2v", audio_path=wav))
    video = write_video(work / "v2a.mp4", sweep_video_frames(16.0, 0.75, (64, 64)), 16.0)
    record("generate_v2a", pipe.generate("a ball", seed=4, sampling=two, task="v2a", video_path=video))
    clip = write_video(work / "clip.mp4", sweep_video_frames(16.0, 1.0, (64, 64)), 16.0, np.tile(bursts, (2, 2)), SR)
    record("generate_continue", pipe.generate("a ball", seed=5, sampling=two, task="continue", video_path=clip,
                                              duration=1.0))  # fmt: skip
    long = write_audio(work / "long.wav", np.tile(bursts, (1, 9))[:, : 5 * SR], SR)
    record("generate_a2v_5s_windowed", pipe.generate("a ball", seed=6, sampling=two, task="a2v", audio_path=long))
    clip = pipe.generate(pipe.default_prompt, seed=0, sampling=pipe.sampling.override(steps=3))  # `demo --steps 3`
    record("demo", clip)
    out["demo"]["metrics"] = {k: m.to_dict() for k, m in clip.metrics().items()}
    return out


GENERATE_CASES = ("generate_", "demo")  # names of the cases that `generate_cases` records


def binaural_cases(work: Path) -> dict:
    """`avflow binaural` read back from the exact float32 wav it writes: the spatialiser, and the model when trained
    weights are installed (none ship today: docs/binaural.md; the model's path is tested in tests/test_binaural.py)."""
    from helpers import moving_square

    from avflow.cli import main
    from avflow.data.media import write_video

    frames = np.repeat(np.repeat(moving_square(t=20, h=16, w=32), 2, axis=1), 2, axis=2)  # (20, 32, 64, 3)
    mono = np.random.default_rng(0).standard_normal((1, int(1.25 * SR))).astype(np.float32) * 0.05
    src = write_video(work / "binaural_in.mp4", frames, 16, audio=mono, sample_rate=SR)
    out = {}
    from avflow.models.binaural import MODEL_FILE

    for mode in ("model", "spatialise") if MODEL_FILE.is_file() else ("spatialise",):
        wav = work / f"binaural_{mode}.wav"
        steps = ["--steps", "4", "--seed", "1"] if mode == "model" else []  # spatialising samples nothing
        assert main(["binaural", str(src), "-o", str(work / f"b_{mode}.mp4"), "--mode", mode, *steps,
                     "--wav", str(wav)]) == 0  # fmt: skip
        out[f"binaural_{mode}"] = {"audio": digest(read_wav(wav))}
    return out


def foley_cases(work: Path, monkeypatch) -> dict:
    """`avflow foley` (windowed, negative prompt, --cfg) and `avflow t2a` with tiny official-format weights."""
    from helpers import (
        TINY_FOLEY_MODEL,
        always_winograd,
        fixtures_root,
        install_tiny_foley,
        sweep_video_frames,
        tiny_foley_raw_files,
    )

    from avflow.cli import main
    from avflow.data.media import write_video
    from avflow.pipelines.foley_variants import FoleySpec

    always_winograd(monkeypatch)
    raw = work / "raw_source"
    raw.mkdir()
    files, spec = tiny_foley_raw_files(raw, fixtures_root())
    install_tiny_foley(monkeypatch, work / "home", raw, files, FoleySpec(**spec))
    fast = ["--model", TINY_FOLEY_MODEL, "--steps", "2", "--window", "1.0", "--overlap", "0.25", "--device", "cpu"]
    video = write_video(work / "foley_in.mp4", sweep_video_frames(23.976, 2.2), 23.976)
    out = {}
    wav = work / "foley.wav"
    assert main(["foley", str(video), "-o", str(work / "foley.mp4"), "--wav", str(wav), "--prompt", "steps",
                 "--negative-prompt", "wind", "--cfg", "3.5", "--seed", "5", *fast]) == 0  # fmt: skip
    out["foley_video"] = {"audio": digest(read_wav(wav))}
    wav = work / "t2a.wav"
    assert main(["t2a", "rain on a roof", "--duration", "1.3", "-o", str(wav), *fast]) == 0
    out["foley_t2a"] = {"audio": digest(read_wav(wav))}
    return out


def tiny_joint(fusion: str, options: dict, alignment: str = "none"):
    from avflow.models.audio_tower import AudioTowerConfig
    from avflow.models.joint import JointConfig, JointModel
    from avflow.models.wan import WanConfig

    torch.manual_seed(0)
    config = JointConfig(
        video=WanConfig(num_attention_heads=2, attention_head_dim=12, text_dim=24, freq_dim=32, ffn_dim=48,
                        num_layers=2),
        audio=AudioTowerConfig(text_dim=24, hidden_dim=32, depth=3, fused_depth=1, num_heads=2, text_seq_len=5),
        fusion=fusion, fusion_options=options, alignment=alignment, text_dim=24, text_len=5,
    )  # fmt: skip
    model = JointModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised gates and projections carry signal too
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def joint_inputs(batch: int = 2, frames: int = 3, tokens: int = 24):
    gen = torch.Generator().manual_seed(2)
    streams = {
        "video": torch.randn(batch, 16, frames, 4, 4, generator=gen),
        "audio": torch.randn(batch, tokens, 20, generator=gen),
    }
    cond = {
        "text": torch.randn(batch, 5, 24, generator=gen),
        "text_mask": torch.tensor([[1, 1, 1, 0, 0]] * batch).bool(),
    }
    return streams, cond


FUSION_CASES = {
    "none": ("none", {}, "none"),
    "bidirectional": ("bidirectional", {"heads": 2}, "none"),
    "full_attention_avsync": ("full_attention", {"heads": 2, "layers": 2}, "avsync"),
    "windowed_aligners_seconds": ("windowed_aligners", {"heads": 2, "every": 1, "window": 1}, "seconds"),
    "windowed_aligners_region": ("windowed_aligners", {"heads": 2, "every": 2, "region_modulation": True}, "none"),
}


def model_cases() -> dict:
    """Velocities of every fusion variant and guided sampling with each guidance preset of the experiments."""
    from avflow.flow.guidance import preset_branches
    from avflow.flow.solvers import sample

    out = {}
    streams, cond = joint_inputs()
    t = {"video": torch.tensor([0.3, 0.7]), "audio": torch.tensor([0.3, 0.7])}
    for name, (fusion, options, alignment) in FUSION_CASES.items():
        model = tiny_joint(fusion, options, alignment)
        with torch.no_grad():
            v = model.velocity(streams, t, cond)
            off = model.velocity(streams, t, cond, cross_modal=False)
        out[f"fusion_{name}"] = {s: digest(v[s]) for s in v} | {f"{s}_off": digest(off[s]) for s in off}
    model = tiny_joint("bidirectional", {"heads": 2})
    for kind in ("none", "plain", "modality", "modality_text"):
        branches = preset_branches(kind, cfg_strength=3.0, text_cfg_strength=2.0)
        result = sample(model, streams, cond, steps=3, solver="euler", guidance=branches)
        out[f"guidance_{kind}"] = {s: digest(x) for s, x in result.streams.items()} | {"nfe": result.nfe}
    return out


def compute(work: Path, monkeypatch, *, generate: bool = True, others: bool = True) -> dict:
    """The cases of the default model (`generate`) and / or all the others."""
    builds = ([lambda: generate_cases(work)] if generate else []) + (
        [lambda: binaural_cases(work), lambda: foley_cases(work, monkeypatch), model_cases] if others else []
    )
    cases = {}
    for build in builds:
        torch.manual_seed(0)
        cases |= build()
    return cases


def test_outputs_are_bit_identical_to_the_reference(tmp_path, monkeypatch):
    from helpers import shipped_default_model_is_v2

    reference = json.loads(REFERENCE.read_text())
    if reference["platform"] != platform_key():
        pytest.skip(f"reference recorded on {reference['platform']}; here {platform_key()} (regenerate it here with "
                    "`python tests/test_refactor_reference.py --write` before changing code)")  # fmt: skip
    recorded = any(name.startswith(GENERATE_CASES) for name in reference["cases"])
    if shipped_default_model_is_v2() and not recorded:
        pytest.fail("the shipped default model is v2 but its generate cases are not recorded yet: run "
                    "`python tests/test_refactor_reference.py --write-generate`", pytrace=False)  # fmt: skip
    got = compute(tmp_path, monkeypatch, generate=recorded)
    assert sorted(got) == sorted(reference["cases"])
    different = [name for name in got if got[name] != reference["cases"][name]]
    assert not different, f"outputs changed: {different}"


def write_reference(cases: dict) -> None:
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    lines = [f" {json.dumps(name)}: {json.dumps(case)}" for name, case in cases.items()]  # one line per case
    REFERENCE.write_text(f'{{"platform": {json.dumps(platform_key())},\n"cases": {{\n' + ",\n".join(lines) + "}}\n")
    print(f"wrote {REFERENCE} ({len(cases)} cases)")


if __name__ == "__main__":
    if sys.argv[1:] not in (["--write"], ["--write-generate"]):
        sys.exit("usage: python tests/test_refactor_reference.py --write | --write-generate  (records "
                 "tests/data/refactor_reference.json: every case, or the default model's cases into it)")  # fmt: skip
    import tempfile

    sys.path[:0] = [str(TESTS.parent), str(TESTS)]  # this checkout's avflow, then the test helpers
    torch.set_num_threads(1)  # as in conftest.py: the reference is recorded with one intra-op thread
    only_generate = sys.argv[1] == "--write-generate"
    if only_generate and json.loads(REFERENCE.read_text())["platform"] != platform_key():
        sys.exit("the reference was recorded on another platform: record all of it here with --write")
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        cases = compute(Path(tmp), mp, others=not only_generate)
    if only_generate:
        kept = {k: v for k, v in json.loads(REFERENCE.read_text())["cases"].items() if not k.startswith(GENERATE_CASES)}
        cases = cases | kept
    write_reference(cases)
