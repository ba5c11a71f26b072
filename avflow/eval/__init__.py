"""Model-free metrics: `sync` (ms offsets, AV-Align), `spatial` (binaural cues and distances), `physics`
(tracking, gravity-and-bounce fits), `distribution` (Fréchet distance), `report` (the `avflow eval` suite).
`synthetic` makes small clips with exact ground truth for tests and benchmarks."""
