"""Flow matching: paths, losses, time sampling, ODE solvers and guidance (t = 0 noise, t = 1 data)."""

from avflow.flow.guidance import GuidanceBranch, cfg, guided_velocity
from avflow.flow.loss import flow_matching_loss, noised_streams
from avflow.flow.paths import interpolate, velocity_target
from avflow.flow.solvers import SampleResult, integrate, sample, time_grid
from avflow.flow.streams import TIME_DIM, broadcast_time, clean_mask
from avflow.flow.timesteps import TimestepSampler, shift_time

__all__ = [
    "GuidanceBranch",
    "SampleResult",
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
    "sample",
    "shift_time",
    "time_grid",
    "velocity_target",
]
