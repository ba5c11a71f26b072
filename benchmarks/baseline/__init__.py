"""Faithful plain baselines for benchmarks/foley_stages.py: each stage computed the way the public MMAudio code
computes it (pinned here, so avflow's speed-ups never move the baseline), on tensors named as in the official
checkpoints."""
