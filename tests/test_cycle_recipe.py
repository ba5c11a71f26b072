"""`avflow train default_joint_v2_cycle`: one more cycle of the shipped default model as it is. The recipe's network is
the shipped one (its weights load strictly, with no rename), and it starts from them (the other shipped joint recipes
have 4 video blocks and refused the shipped weights: 'unexpected keys: video.blocks.4...')."""

from __future__ import annotations

from pathlib import Path

from avflow.commands.train import resolve_config
from avflow.train.components import MODELS
from avflow.train.config import InitConfig, load_train_config, resolve_component
from avflow.train.trainer import initialize

REPO = Path(__file__).resolve().parents[1]


def test_the_cycle_recipe_is_the_shipped_network_and_starts_from_it(tmp_path):
    cache = tmp_path / "cache.safetensors"
    cache.write_bytes(b"")  # the data files must exist when the config loads; this test reads none
    config = load_train_config(resolve_config("default_joint_v2_cycle"),
                               [f"data.train.args.file={cache}", f"data.val.args.file={cache}"])  # fmt: skip
    assert (REPO / config.init.weights).resolve() == (REPO / "avflow/assets/default_model/joint.safetensors").resolve()
    model = MODELS[config.model.name].build(resolve_component(MODELS, config.model, "model"))
    initialize(model, InitConfig(weights=str(REPO / config.init.weights)))  # strict: every key, every shape
    assert config.task.args["stream_weights"] == {"video": 2.0}  # as the shipped model's later cycles
