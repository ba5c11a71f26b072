"""Run an experiment: every available arm × seed, resumably, then aggregate and write the tables and plot.

Layout under `out/NAME/`: `data/` (shared world clips and streams), `work/train_<key>/seed_<s>/` (trainer runs with
checkpoints; arms with the same model, streams and training settings share one), `runs/<arm>/seed_<s>.json` (one
result each, written atomically with the settings it was made with; a rerun reuses it only when they are this run's,
and refuses before anything runs when they are not), `results.md`, `results.json`, `results.png`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from avflow.errors import ConfigError
from avflow.experiments import results as res
from avflow.experiments.configs import (
    ArmConfig,
    ExperimentConfig,
    SizeConfig,
    check_experiment,
    settings_difference,
    unavailable_reason,
)

# (arm, seed, work folder) -> metrics; the default trains and evaluates, tests pass a stub
ArmRunner = Callable[[ArmConfig, int, Path], dict]
# (arm, seed) -> everything its metrics depend on (JSON-able), recorded with them
ArmSettings = Callable[[ArmConfig, int], dict]


def atomic_json(path: Path, obj: dict) -> None:
    from avflow.weights import atomic_write

    atomic_write(path, lambda f: f.write(res.to_json(obj).encode()))


def result_path(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / arm / f"seed_{seed}.json"


def read_result(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a result file ({exc}); delete it") from None


def check_results(arms: list[ArmConfig], seeds: list[int], out: Path, settings: ArmSettings) -> None:
    """Before anything runs: a one-line ConfigError for the first result in `out` made with other settings than
    this run's (or with none recorded), so a result is never reused under another run's labels."""
    for arm in arms:
        for seed in seeds:
            path = result_path(out, arm.name, seed)
            if path.is_file() and (diff := settings_difference(read_result(path).get("settings"), settings(arm, seed))):
                raise ConfigError(f"{path} was made with {diff}; use another --out (or delete that result)")


def run_arms(arms: list[ArmConfig], seeds: list[int], out: Path, run_arm: ArmRunner, settings: ArmSettings,
             log=print) -> dict[str, list]:  # fmt: skip
    """Every arm × seed not finished yet; returns {arm: [metrics per seed]}. A finished result is reused when it was
    made with this run's `settings`; another's is refused first (`check_results`). An exception leaves finished ones."""
    check_results(arms, seeds, out, settings)
    per_seed: dict[str, list] = {}
    for arm in arms:
        per_seed[arm.name] = []
        for seed in seeds:
            path = result_path(out, arm.name, seed)
            if path.is_file():
                log(f"{arm.name} seed {seed}: done, skipped ({path})")
                per_seed[arm.name].append(read_result(path)["metrics"])
                continue
            start = time.perf_counter()
            metrics = run_arm(arm, seed, out / "work")
            seconds = time.perf_counter() - start
            record = {"arm": arm.name, "seed": seed, "seconds": seconds, "settings": settings(arm, seed)}
            atomic_json(path, record | {"metrics": metrics})
            log(f"{arm.name} seed {seed}: {seconds:.1f} s")
            per_seed[arm.name].append(metrics)
    return per_seed


def finish(exp: ExperimentConfig, per_seed: dict[str, list], out: Path, info: dict) -> dict:
    """Aggregate, compare with the baseline, write results.{md,json,png}; returns the result dict."""
    table = res.aggregate(per_seed)
    baseline = exp.baseline
    if baseline not in table:  # never another arm in its place
        raise ConfigError(f"experiment {exp.name}: baseline {baseline} has no results")
    result = {
        "name": exp.name,
        "description": exp.description,
        "claim": exp.claim,
        "metrics": exp.metrics,
        "baseline": baseline,
        "rule": res.RULE,
        "table": table,
        "effects": res.compare(table, baseline, exp.metrics),
        **info,
    }
    (out / "results.md").write_text(res.to_markdown(result))
    atomic_json(out / "results.json", result)
    res.plot_png(result, out / "results.png")
    return result


def plan_arms(exp: ExperimentConfig, size: SizeConfig) -> tuple[dict[str, dict], dict[str, int], dict[str, str]]:
    """Model config per available arm (padded to the shared parameter budget), its parameter count, and why the
    other arms are not available (a fusion or alignment not implemented yet, `configs.unavailable_reason`; never
    the baseline). Any other arm that does not build at this size is a one-line ConfigError."""
    from avflow.experiments.arm import arm_model, build_model, count_params, pad_to_budget

    check_experiment(exp)
    models, counts, unavailable = {}, {}, {}
    for arm in exp.arms:
        if reason := unavailable_reason(arm.model):
            unavailable[arm.name] = reason
            continue
        model = arm_model(arm, size)
        try:
            counts[arm.name] = count_params(build_model(model), exp.budget, arm.streams)
        except ConfigError as exc:
            raise ConfigError(f"experiment {exp.name}: arm {arm.name}: {exc}") from None
        models[arm.name] = model
    arms = {a.name: a for a in exp.arms}
    models, counts = pad_to_budget(models, counts, arms, exp.budget)
    return models, counts, unavailable


def run_experiment(exp: ExperimentConfig, size_name: str, size: SizeConfig, out: Path, seeds: int, steps: int,
                   device: str = "cpu", threads: int | None = 1, log=print) -> dict:  # fmt: skip
    """Train and evaluate every available arm for `seeds` seeds; resumable at arm × seed and trainer-step level."""
    from avflow.experiments.arm import arm_settings, run_arm
    from avflow.experiments.world_data import codecs_checksum, prepare_data

    out = Path(out)
    start = time.perf_counter()
    models, counts, unavailable = plan_arms(exp, size)
    for name, reason in unavailable.items():
        log(f"{name}: not available ({reason})")
    log("parameters per arm (" + exp.budget + "): " + ", ".join(f"{a}={n}" for a, n in counts.items()))
    arms, seed_list, checksum = [a for a in exp.arms if a.name in models], list(range(seeds)), codecs_checksum(size)

    def settings(arm: ArmConfig, seed: int) -> dict:
        return arm_settings(exp, arm, models[arm.name], size, steps, seed, checksum, device)

    check_results(arms, seed_list, out, settings)  # before the data is rendered
    data = out / "data"
    manifest = prepare_data(size, data)

    def one(arm: ArmConfig, seed: int, work: Path) -> dict:
        return run_arm(exp, arm, models[arm.name], size, steps, seed, data, work, manifest, device, threads)

    per_seed = run_arms(arms, seed_list, out, one, settings, log)
    info = {
        "seeds": seeds, "size": size_name, "steps": steps, "params": counts, "unavailable": unavailable,
        "budget": exp.budget, "nfe": size.nfe, "seconds": time.perf_counter() - start,
        "notes": [
            f"Parameter budget ({exp.budget}) within 5 %: " + ", ".join(f"{a} {n}" for a, n in counts.items()) + ".",
            f"NFE per sample matched at {size.nfe} (plain and modality-aware CFG: 2 branches x {size.nfe // 2} "
            f"steps; modality-aware + text CFG: 3 branches x {size.nfe // 3} steps).",
        ],
    }  # fmt: skip
    return finish(exp, per_seed, out, info)
