"""What keeping freed memory in the heap (avflow.heap, set by the `avflow` command) buys.

Each run is a fresh child process, as a user's command is: it builds the workload (random weights, seeded), calls it
once to warm up and once timed, and reports the timed call's wall time, minor page faults and system CPU time, and
the peak RSS over both calls (the warm-up's included: the model's weights are in it). Children alternate over
rounds x workloads x heap policy (glibc's defaults, or `keep_freed_memory()` at the start of the child), so that a
slow spell of a shared machine hits every cell. Workloads:

  vocoder-16k-plain, vocoder-44k-plain  BigVGAN the reference's way (benchmarks/baseline/), --seconds of audio
  vocoder-16k, vocoder-44k              avflow's BigVGAN as shipped
  network-small, network-large          avflow's MMAudio network, --steps Euler steps with CFG (foley_stages.py's)

    .venv/bin/python benchmarks/heap.py [--workloads vocoder-16k-plain vocoder-16k] [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from avflow import heap

HERE = Path(__file__).resolve().parent
WORKLOADS = ("vocoder-16k-plain", "vocoder-16k", "vocoder-44k-plain", "vocoder-44k", "network-small", "network-large")
POLICIES = ("default", "keep")


def child(workload: str, policy: str, seconds: float, steps: int, threads: int) -> dict:
    """Runs in the child: build, warm up, time one call."""
    if policy == "keep":
        if not heap.keep_freed_memory():
            raise SystemExit("keep_freed_memory() did not apply here (not glibc, or the environment sets malloc)")
    import torch

    sys.path.insert(0, str(HERE))
    from common import peak_memory_mb, reset_peak_memory

    torch.set_num_threads(threads)
    call = build(workload, seconds, steps)
    with torch.inference_mode():
        reset_peak_memory(trim=False)  # the heap as the process left it
        call()
        faults, system = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, os.times().system
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "faults": usage.ru_minflt - faults, "system_s": os.times().system - system,
            "peak_rss_mb": peak_memory_mb()}  # fmt: skip


def build(workload: str, seconds: float, steps: int):
    """A zero-argument call for the workload."""
    import torch
    from baseline import bigvgan as plain_bigvgan
    from foley_stages import random_vocoder

    from avflow.codecs.bigvgan import BIGVGAN_CONFIGS

    if workload.startswith("vocoder"):
        config = BIGVGAN_CONFIGS[workload.split("-")[1]]
        vocoder = random_vocoder(config, torch.device("cpu"))
        mel = torch.randn(1, config.num_mels, round(seconds * config.sample_rate / config.hop_length))
        if workload.endswith("-plain"):
            params = vocoder.state_dict()
            return lambda: plain_bigvgan.vocode(params, config, mel)
        return lambda: vocoder(mel)
    from foley_stages import random_network

    from avflow.models.mmaudio_config import SAMPLING, get_config
    from avflow.pipelines.foley_model import sample_latents

    net = random_network(get_config({"network-small": "small_16k", "network-large": "large_44k_v2"}[workload]),
                         seconds, torch.device("cpu"))  # fmt: skip
    c, gen = net.config, torch.Generator().manual_seed(3)
    clip_f = torch.randn(1, net.clip_seq_len, c.clip_dim, generator=gen)
    sync_f = torch.randn(1, net.sync_seq_len, c.sync_dim, generator=gen)
    text_f = torch.randn(1, c.text_seq_len, c.text_dim, generator=gen)
    x0 = torch.randn(1, net.latent_seq_len, c.latent_dim, generator=gen)

    def sample() -> torch.Tensor:
        net.clear_caches()
        cond = net.preprocess_conditions(clip_f, sync_f, text_f)
        return sample_latents(net, x0, cond, SAMPLING.override(steps=steps))[0]

    return sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=["vocoder-16k-plain", "vocoder-16k"])
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of audio (vocoders) or of the clip (networks)")
    p.add_argument("--steps", type=int, default=25, help="networks: Euler steps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", nargs=2, metavar=("WORKLOAD", "POLICY"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.steps < 1 or args.threads < 1:
        p.error("--seconds must be > 0 and --rounds, --steps, --threads >= 1")
    if args.child:
        print(json.dumps(child(*args.child, args.seconds, args.steps, args.threads)))
        return
    sys.path.insert(0, str(HERE))
    from common import check_output, report  # not in the children: each starts with its own heap

    check_output(p, args.json)
    env = {k: v for k, v in os.environ.items() if not heap.sets_malloc(k) and k != heap.SWITCH}  # children decide
    runs: dict[tuple[str, str], list[dict]] = {(w, h): [] for w in args.workloads for h in POLICIES}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for workload in args.workloads:
            for policy in POLICIES:
                command = [sys.executable, __file__, "--child", workload, policy, "--seconds", str(args.seconds),
                           "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
                out = subprocess.run(command, env=env, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{workload} ({policy}) failed: {out.stderr.strip().splitlines()[-1:]}")
                runs[(workload, policy)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for (workload, policy), measured in runs.items():
        walls = [m["wall_s"] for m in measured]
        default = statistics.median(m["wall_s"] for m in runs[(workload, "default")])
        rows.append({"workload": workload, "heap": policy, "median_s": round(statistics.median(walls), 2),
                     "best_s": round(min(walls), 2), "vs_default": round(default / statistics.median(walls), 2),
                     "faults": int(statistics.median(m["faults"] for m in measured)),
                     "system_s": round(statistics.median(m["system_s"] for m in measured), 2),
                     "peak_rss_mb": round(max(m["peak_rss_mb"] for m in measured)),
                     "all_s": [round(w, 2) for w in walls]})  # fmt: skip
    report(rows, args.threads, load_before, f"child process per run, {args.seconds} s, {args.rounds} rounds", args.json)


if __name__ == "__main__":
    main()
