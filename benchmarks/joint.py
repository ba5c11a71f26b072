"""Joint model on the CPU: training-step throughput, sampling time per clip, FLOPs and fraction of fp32 matmul peak.

Shapes are the world defaults (4 s, 64x64 px at 16 fps -> video latents (16, 16, 8, 8); audio latents (125, 20)).
The peak is a large fp32 matmul measured in the same run; the baseline is a plain PyTorch transformer stack
(`nn.TransformerEncoderLayer`) of the same width over the same number of tokens, also measured in the same run.

    .venv/bin/python benchmarks/joint.py [--batch 4] [--steps 25] [--threads N] [--fusion bidirectional]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ArgumentParser, load_facts, matmul_peak_gflops, non_negative_int, positive_int, run_main, timed  # noqa: E402

from avflow.flow.loss import flow_matching_loss, noised_streams  # noqa: E402
from avflow.flow.solvers import sample  # noqa: E402
from avflow.models.joint import JointConfig, JointModel  # noqa: E402


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, default=25, help="Euler steps for sampling")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--fusion", default="bidirectional")
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = JointConfig(fusion=args.fusion)
    model = JointModel(config)
    b = args.batch
    x1 = {"video": torch.randn(b, 16, 16, 8, 8), "audio": torch.randn(b, 125, 20)}
    cond = {
        "text": torch.randn(b, config.text_len, config.text_dim),
        "text_mask": torch.ones(b, config.text_len).bool(),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        t = torch.rand(b)
        times = {k: t for k in x1}
        xt, target, mask = noised_streams(x1, times, {k: torch.randn_like(v) for k, v in x1.items()})
        pred = model.velocity(xt, times, cond)
        loss = sum(flow_matching_loss(pred[k], target[k], mask[k]).mean() for k in x1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    # plain transformer baseline: same width and token count as the video tower, same number of blocks
    tokens = 16 * 4 * 4 + 125
    width = config.video.dim
    layer = torch.nn.TransformerEncoderLayer(width, config.video.num_attention_heads, 4 * width, 0.0, batch_first=True)
    baseline = torch.nn.TransformerEncoder(
        layer, config.video.num_layers + config.audio.depth, enable_nested_tensor=False
    )
    base_opt = torch.optim.AdamW(baseline.parameters(), lr=1e-4)
    base_x = torch.randn(b, tokens, width)

    def baseline_step() -> None:
        loss = baseline(base_x).square().mean()
        base_opt.zero_grad()
        loss.backward()
        base_opt.step()

    peak = matmul_peak_gflops() * 1e9
    step_s = timed(train_step, repeat=args.repeats)
    step_flops = flops_of(train_step)
    base_s = timed(baseline_step, repeat=args.repeats)
    base_flops = flops_of(baseline_step)

    model.eval()
    one = {k: v[:1] for k, v in x1.items()}
    one_cond = {k: v[:1] for k, v in cond.items()}
    with torch.no_grad():
        sample_s = timed(
            lambda: sample(model, {k: torch.randn_like(v) for k, v in one.items()}, one_cond, steps=args.steps), 1
        )
        fwd_flops = flops_of(lambda: model.velocity(one, {k: torch.ones(1) * 0.5 for k in one}, one_cond))

    params = sum(p.numel() for p in model.parameters())
    print(f"joint model ({args.fusion}), {params / 1e6:.2f} M parameters, batch {b}, threads {torch.get_num_threads()}")
    print(f"fp32 matmul peak (2048^3): {peak / 1e9:8.1f} GFLOP/s")
    print(f"{'case':<28}{'s/step':>10}{'samples/s':>12}{'GFLOP/step':>12}{'GFLOP/s':>10}{'% peak':>8}")
    for name, seconds, flops in (
        ("joint train step", step_s, step_flops),
        ("plain transformer baseline", base_s, base_flops),
    ):
        rate = flops / seconds
        print(
            f"{name:<28}{seconds:>10.3f}{b / seconds:>12.2f}{flops / 1e9:>12.2f}"
            f"{rate / 1e9:>10.1f}{100 * rate / peak:>7.1f}%"
        )
    nfe_flops = fwd_flops * args.steps
    print(
        f"sampling: {sample_s:.2f} s per clip ({args.steps} Euler steps, batch 1), "
        f"{nfe_flops / 1e9:.2f} GFLOP, {100 * nfe_flops / sample_s / peak:.1f}% of peak"
    )
    print(load_facts(load_before))


if __name__ == "__main__":
    run_main(main)
