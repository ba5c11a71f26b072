"""Flow matching: paths, losses, time sampling, ODE solvers and guidance (t = 0 noise, t = 1 data)."""

from avflow.flow.guidance import PRESETS, GuidanceBranch, cfg, guided_velocity, preset_branches
from avflow.flow.loss import flow_matching_loss, noised_streams
from avflow.flow.paths import interpolate, velocity_target
from avflow.flow.sampling import SAMPLER_PRESETS, SamplingConfig, parse_stream_strengths, sample_with
from avflow.flow.solvers import SampleResult, integrate, sample, time_grid
from avflow.flow.streams import TIME_DIM, broadcast_time, clean_mask
from avflow.flow.timesteps import TimestepSampler, shift_time

__all__ = [
    "GuidanceBranch",
    "PRESETS",
    "SAMPLER_PRESETS",
    "SampleResult",
    "SamplingConfig",
    "TIME_DIM",
    "TimestepSampler",
    "broadcast_time",
    "cfg",
    "clean_mask",
    "flow_matching_loss",
    "guided_velocity",
    "integrate",
    "interpolate",
    "noised_streams",
    "parse_stream_strengths",
    "preset_branches",
    "sample",
    "sample_with",
    "shift_time",
    "time_grid",
    "velocity_target",
]
