"""Sampling-time experiments (guidance) on trained models: the shipped default model or model folders exported the
same way, on held-out prompts, scored by issue 22's prompt targets (`avflow.eval.prompt_targets`).

The models serve every arm, so arms may differ only in their guidance. With one model the seeds are sampling seeds:
prompt i of seed s is generated with the prompt's own seed + SEED_STRIDE * s, and the 2σ rule asks whether the arms
differ on this model beyond sampling noise. With several models of one recipe (its training seeds) seed s is model
s, sampled with the prompts' own seeds, and the rule asks whether they differ across training runs. Every arm gets
the same model evaluations per sample (`nfe`, every guidance branch counted; default: the model's own steps with
plain CFG).

Whether the model learned enough for the comparison to mean something (issue 26's bench criterion) is a metric:
`learns` = 1 for a seed where the named object is shown in >= 60 % of one-object clips and the median sync error is
<= 62 ms and <= half the shuffled-pair chance level (each clip's video scored against the next clip's audio).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from avflow.errors import ConfigError
from avflow.experiments.configs import (
    ArmConfig,
    ExperimentConfig,
    evaluations_per_sampling_step,
    evaluations_per_step,
    sampling_steps,
)
from avflow.experiments.runner import atomic_json, finish, run_arms

SEED_STRIDE = 1000
LEARNS = {"object": 60.0, "sync_ms": 62.0, "chance_fraction": 0.5}
RATES = ("object", "object_side", "sound", "contact", "count", "space", "two_objects")  # percent
METRICS = [*RATES, "sync_ms", "sync_chance_ms", "learns", "nfe"]


def check_guidance_only(exp: ExperimentConfig) -> None:
    """A one-line error when an arm changes the model or its streams (that needs training, not one model)."""
    for arm in exp.arms:
        if arm.model or sorted(arm.streams) != ["audio", "video"]:
            raise ConfigError(f"experiment {exp.name}: arm {arm.name} changes the model or its streams; only arms "
                              "that differ in guidance run on one trained model (--model)")  # fmt: skip


def shipped_prompt_files() -> dict[str, Path]:
    """The prompt files shipped in the package (avflow/assets/configs, the repository's `configs/`) by file name."""
    from avflow import assets_dir

    return {p.name: p for p in sorted((assets_dir() / "configs").glob("*.json"))}


def resolve_prompts(name: str) -> Path:
    """A prompt file: an existing path as is; else a shipped one by name (`bench_prompts`, `bench_prompts.json` or the
    source repository's `configs/bench_prompts.json`, so README commands work after a pip install); else a one-line
    ConfigError saying it is not found."""
    path = Path(name)
    if path.exists():
        return path
    shipped = shipped_prompt_files()
    key = path.as_posix().removeprefix("configs/")
    key = key if key.endswith(".json") else f"{key}.json"
    if key in shipped:
        return shipped[key]
    names = ", ".join(f"configs/{n}" for n in shipped)
    raise ConfigError(f"{name}: not found, nor a prompt file shipped with avflow ({names})")


PROMPT_FILE = '{"prompts": [{"id": ..., "prompt": ..., "seed": ...}, ...]} or that list alone'


def read_prompt_rows(path: Path) -> list[dict]:
    """The rows of a held-out prompt file (`scripts/model_card_metrics.py --make-prompts`: `{"prompts": [rows]}`, or
    the list of rows alone): id, prompt, seed. Every prompt must be world-style (name a world object), since the
    prompt targets score nothing else: checked here, before any model loads, rather than after every prompt was
    sampled."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: {'a folder, not a prompt file' if Path(path).is_dir() else 'not found'}")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a prompt file ({str(exc).splitlines()[0]}); expected {PROMPT_FILE}") from None
    rows = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"{path}: not a prompt file; expected {PROMPT_FILE}")
    try:
        rows = [{"id": str(r["id"]), "prompt": str(r["prompt"]), "seed": int(r["seed"])} for r in rows]
    except KeyError as exc:
        raise ConfigError(f"{path}: a prompt without {exc}; expected {PROMPT_FILE}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a prompt file ({exc}); expected {PROMPT_FILE}") from None
    if not rows:
        raise ConfigError(f"{path}: no prompts")
    for row in rows:
        check_world_prompt(path, row)
    return rows


def check_world_prompt(path: Path, row: dict) -> None:
    """A one-line ConfigError naming the row's id unless its prompt names a world object (a colour and a shape)."""
    from avflow.eval.prompt_measures import world_objects

    try:
        world_objects(row["prompt"])
    except ValueError:
        raise ConfigError(f"{path}: prompt {row['id']} names no world object (a colour and a shape word): "
                          f"{row['prompt']!r}; the guidance targets score world-style prompts, e.g. 'a red ball "
                          "bounces twice on the left'") from None  # fmt: skip


def check_nfe(exp: ExperimentConfig, nfe: int, solver: str, what: str) -> None:
    """A one-line ConfigError unless every arm takes at least one solver step within `nfe` evaluations per sample:
    one step anyway would spend more than the budget, and arms would differ in NFE, not only in guidance."""
    for arm in exp.arms:
        per_step = evaluations_per_sampling_step(arm.guidance, solver)
        if nfe < per_step:
            raise ConfigError(f"{what} is below one step of {arm.name} with the {solver} solver "
                              f"({per_step} evaluations)")  # fmt: skip


def planned_sampling(exp: ExperimentConfig, model: str | None, nfe: int | None, solver: str | None):
    """Before any model loads: the model's sampling settings (its config.json, no weights) with `solver`, and the NFE
    per sample (default: 2 x its steps x its solver's evaluations per step), checked against every arm."""
    from avflow.pipelines.default_model import read_default_config

    if solver is not None:
        evaluations_per_step(solver)
    base = read_default_config(model).sampling.override(solver=solver)
    if nfe is not None:
        check_nfe(exp, nfe, base.solver, f"--nfe {nfe}")
        return base, nfe
    per_step = evaluations_per_step(base.solver)
    default = 2 * base.steps * per_step
    check_nfe(exp, default, base.solver, f"the default NFE {default} (2 x the model's {base.steps} steps x {per_step})")
    return base, default


def arm_sampling(base, arm: ArmConfig, exp: ExperimentConfig, nfe: int):
    """The model's sampling settings with the arm's guidance, steps cut to the NFE budget; the guidance strength
    stays the model's own, the empty-text branch's strength is the experiment's."""
    return base.override(steps=sampling_steps(arm.guidance, nfe, base.solver), guidance=arm.guidance,
                         text_cfg_strength=exp.text_cfg_strength)  # fmt: skip


def target_values(clips: list) -> dict[str, float]:
    """Prompt-target values of a list of `PromptClipMeasures`: rates in percent, sync in ms (NaN: not measurable)."""
    from avflow.eval.prompt_targets import score

    out = {}
    for r in score(clips):
        value = float("nan") if r.value is None else float(r.value)
        out["sync_ms" if r.target.name == "sync" else r.target.name] = value if r.target.name == "sync" else 100 * value
    return out


def learns(values: dict[str, float]) -> float:
    """1.0 when the bench criterion holds for these values, else 0.0 (NaN counts as not met)."""
    ok = (values["object"] >= LEARNS["object"] and values["sync_ms"] <= LEARNS["sync_ms"]
          and values["sync_ms"] <= LEARNS["chance_fraction"] * values["sync_chance_ms"])  # fmt: skip
    return 1.0 if ok else 0.0


def score_clips(rows: list[dict], clips: list[tuple]) -> dict[str, float]:
    """Targets of the generated clips `(frames, fps, audio, sample_rate)` per row, the shuffled-pair chance level
    (row i's prompt and video with row i+1's audio) and the bench criterion."""
    from avflow.eval.prompt_measures import measure_prompt_clip

    own = [measure_prompt_clip(r["prompt"], f, fps, a, sr) for r, (f, fps, a, sr) in zip(rows, clips, strict=True)]
    shifted = clips[1:] + clips[:1]
    shuffled = [measure_prompt_clip(r["prompt"], f, fps, other[2], sr)
                for r, (f, fps, _, sr), other in zip(rows, clips, shifted, strict=True)]  # fmt: skip
    values = target_values(own)
    values["sync_chance_ms"] = target_values(shuffled)["sync_ms"]
    values["learns"] = learns(values)
    return values


def run_on_model(exp: ExperimentConfig, model: str | None, prompts: Path, out: Path, seeds: int,
                 nfe: int | None = None, log=print, solver: str | None = None) -> dict:  # fmt: skip
    """Every arm × sampling seed on one trained model (`model`: a folder, None: the shipped default model), with the
    model's solver or `solver` (a fixed-step one); resumable per arm × seed. `out` keeps one setup: another model,
    prompt file, solver or NFE there is a one-line error."""
    return _run_arms_on(exp, [model] * seeds, [SEED_STRIDE * s for s in range(seeds)], prompts, out, nfe, log, solver)


def run_on_models(exp: ExperimentConfig, models: list[str | None], prompts: Path, out: Path,
                  nfe: int | None = None, log=print, solver: str | None = None) -> dict:  # fmt: skip
    """Every arm on several trained models of one recipe (e.g. its training seeds): seed s is `models[s]`, sampled
    with each prompt's own seed, so the 2σ rule measures training noise (with one draw of sampling noise), not
    sampling noise alone. The models must sample alike (solver, steps, guidance strength) and have one size."""
    if len(models) < 2 or len(set(models)) < len(models):
        raise ConfigError(f"training seeds need two or more different models, got {[m or 'default' for m in models]}")
    return _run_arms_on(exp, list(models), [0] * len(models), prompts, out, nfe, log, solver)


def _run_arms_on(exp: ExperimentConfig, models: list[str | None], offsets: list[int], prompts: Path, out: Path,
                 nfe: int | None, log, solver: str | None) -> dict:  # fmt: skip
    """Seed s: model `models[s]`, prompt seeds + `offsets[s]`."""
    from avflow.pipelines.default_model import load_default_model

    check_guidance_only(exp)  # the arms, the prompt file, the solver and the NFE are checked before the model loads
    rows = read_prompt_rows(prompts)
    base, nfe = planned_sampling(exp, models[0], nfe, solver)
    out = Path(out)
    start = time.perf_counter()
    pipes = {m: load_default_model(m) for m in dict.fromkeys(models)}  # each distinct model once
    first = pipes[models[0]]
    names = [str(m or "default") for m in dict.fromkeys(models)]
    for m, pipe in pipes.items():
        if pipe.sampling != first.sampling:
            raise ConfigError(f"models {names[0]} and {m or 'default'} sample differently; compare one recipe's models")
    counts = {sum(p.numel() for p in pipe.model.parameters()) for pipe in pipes.values()}
    if len(counts) > 1:
        raise ConfigError(f"models {', '.join(names)} differ in size ({sorted(counts)} parameters)")
    training_seeds = len(pipes) > 1
    setup = {"nfe": nfe, "prompts": str(prompts), "seed_stride": SEED_STRIDE}
    setup |= {"models": names} if training_seeds else {"model": names[0]}
    if base.solver != "euler":  # setups of runs made before the solver was recorded stay valid
        setup["solver"] = base.solver
    setup_file = out / "setup.json"
    if setup_file.is_file() and json.loads(setup_file.read_text()) != setup:
        raise ConfigError(f"{out} holds results of another setup ({setup_file}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(setup_file, setup)

    def one(arm: ArmConfig, seed: int, work: Path) -> dict:
        pipe = pipes[models[seed]]
        sampling = arm_sampling(base, arm, exp, nfe)
        clips = []
        for row in rows:
            gen = pipe.generate(
                row["prompt"], seed=row["seed"] + offsets[seed], sampling=sampling, cut_prompt=True
            )  # world captions, cut at the model's text length as in training
            clips.append((gen.frames.numpy(), gen.fps, gen.audio.numpy(), gen.sample_rate))
        values = score_clips(rows, clips)
        per_sample = sampling.steps * (1 + len(sampling.branches())) * evaluations_per_step(sampling.solver)
        return values | {"nfe": float(per_sample), "steps": float(sampling.steps)}

    def settings(arm: ArmConfig, seed: int) -> dict:
        model = str(models[seed] or "default")
        return setup | {"model": model, "prompt_seed_offset": offsets[seed], "guidance": arm.guidance,
                        "text_cfg_strength": exp.text_cfg_strength}  # fmt: skip

    per_seed = run_arms(exp.arms, list(range(len(models))), out, one, settings, log)
    cfg = first.sampling.cfg_strength
    label = ", ".join(names)
    if training_seeds:
        seeds_note = (f"{len(models)} trained models of one recipe ({label}), one per seed, each sampled once with "
                      f"the prompts' own seeds over {len(rows)} prompts of {Path(prompts).name}: the 2σ rule "
                      "measures training noise (with one draw of sampling noise per model).")  # fmt: skip
    else:
        seeds_note = (f"One trained model ({label}) for every arm; seeds are sampling seeds (prompt seed + "
                      f"{SEED_STRIDE} x seed) over {len(rows)} prompts of {Path(prompts).name}, so the 2σ rule "
                      "measures sampling noise on this model, not training noise.")  # fmt: skip
    info = {
        "seeds": len(models), "size": f"trained model{'s' if training_seeds else ''} {label}", "steps": "as trained",
        "params": {arm.name: next(iter(counts)) for arm in exp.arms},
        "unavailable": {}, "nfe": nfe, "prompts": str(prompts), "seconds": time.perf_counter() - start,
        "notes": [
            seeds_note,
            f"NFE per sample <= {nfe}: steps = nfe // model evaluations per step; guidance strength {cfg:g} (the "
            f"model's), empty-text branch {exp.text_cfg_strength:g} (modality_text).",
            "Rates in percent (issue 22's prompt targets), sync_ms the median |audio onset - contact| (unmatched "
            "250 ms), sync_chance_ms the same with each clip's audio taken from the next clip, learns: object >= 60 "
            "% and sync_ms <= 62 and <= half the chance level.",
        ],
    }  # fmt: skip
    what = f"{len(models)} trained models of one recipe, one per seed" if training_seeds else "one trained model"
    description = f"{exp.name}: arms that differ only in guidance, at matched NFE, on {what} ({label})."
    return finish(replace(exp, metrics=METRICS, description=description), per_seed, out, info)
