"""Python API inputs checked at the entry: `export_official` keeps a dotted base name whole, a misspelt fusion or
alignment in an experiment arm is an error (not an arm skipped as "not available"), and guidance that is not a
list of branches (a preset name, a bare strength) or an unknown preset is a one-line ConfigError naming what is
accepted, before any model evaluation."""

from __future__ import annotations

import pytest
import torch
from test_experiments import _write_experiment
from test_flow import _streams, _toy
from torch import nn

from avflow.errors import ConfigError, OutputError
from avflow.experiments.configs import load_experiment
from avflow.flow import cfg, guided_velocity, preset_branches, sample

BIDIR = "  - {name: bidirectional, model: {fusion: bidirectional, fusion_options: {heads: 2}}}\n"


# ---------------------------------------------------------------- export_official


def test_export_official_appends_the_suffixes_to_a_dotted_base_name(tmp_path):
    """`ft_sigma0.05` and `ft_sigma0.1` are two exports (the suffix is appended, not swapped for `.05` / `.1`);
    a name ending in .pth or .safetensors names one of the pair."""
    from safetensors.torch import load_file

    from avflow.train.mmaudio_recipe import export_official

    nets = {}
    for name in ("ft_sigma0.05", "ft_sigma0.1", "ft_v1.2_ema"):
        torch.manual_seed(len(nets))
        nets[name] = nn.Linear(3, 2)
        pth, st = export_official(nets[name], tmp_path / name)
        assert (pth.name, st.name) == (f"{name}.pth", f"{name}.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}{s}" for n in nets for s in (".pth", ".safetensors")
    )
    for name, net in nets.items():  # nothing overwrote another
        for key, value in net.state_dict().items():
            assert torch.equal(torch.load(tmp_path / f"{name}.pth", weights_only=True)[key], value)
            assert torch.equal(load_file(tmp_path / f"{name}.safetensors")[key], value)
    for given in ("x.pth", "x.safetensors"):
        assert [p.name for p in export_official(nets["ft_v1.2_ema"], tmp_path / given)] == ["x.pth", "x.safetensors"]
    with pytest.raises(OutputError, match="base file name"):
        export_official(nets["ft_v1.2_ema"], tmp_path)  # a folder: which names? refused, not tmp_path's sibling


# ---------------------------------------------------------------- experiment arms


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("{fusion: full_atention, fusion_options: {heads: 2, layers: 2}}",
         "arms[0].model.fusion: unknown fusion 'full_atention' (did you mean 'full_attention'?)"),
        ("{fusion: full_attention, alignment: av_sync}",
         "arms[0].model.alignment: unknown alignment 'av_sync' (did you mean 'avsync'?)"),
        ("{fusion: bidirectional, alignment: avsnyc}",
         "arms[0].model.alignment: unknown alignment 'avsnyc' (did you mean 'avsync'?)"),
    ],
)  # fmt: skip
def test_a_misspelt_fusion_or_alignment_is_an_error_not_an_arm_left_out(tmp_path, model, why):
    arms = f"  - {{name: typo, model: {model}}}\n{BIDIR}"
    with pytest.raises(ConfigError) as err:
        load_experiment(str(_write_experiment(tmp_path, arms)))
    assert why in str(err.value) and "\n" not in str(err.value), err.value


def test_a_variant_not_implemented_and_not_a_typo_is_still_not_available(tmp_path):
    """`cross_attention` is a variant of its own (not close enough to `full_attention` to be its typo): its arm is
    left out as "not available", as before."""
    from avflow.experiments.configs import SIZES
    from avflow.experiments.runner import plan_arms

    arms = f"  - {{name: cross, model: {{fusion: cross_attention}}}}\n{BIDIR}"
    _, _, unavailable = plan_arms(load_experiment(str(_write_experiment(tmp_path, arms))), SIZES["tiny"])
    assert unavailable["cross"].startswith("fusion 'cross_attention' is not implemented")


# ---------------------------------------------------------------- guidance


def _inputs():
    return _toy(), _streams(), {"text": torch.zeros(2, 5, dtype=torch.float64)}


@pytest.mark.parametrize(
    ("guidance", "why"),
    [
        ("modality", "got the preset name 'modality' (use preset_branches('modality', cfg_strength=W)"),
        (3.0, "got the number 3.0 (plain CFG of strength 3.0 is cfg(3.0))"),
        (None, "got NoneType"),
        (cfg(3.0)[0], "got one GuidanceBranch (put it in a list)"),
    ],
)
def test_sample_refuses_guidance_that_is_not_a_list_of_branches_before_any_step(guidance, why):
    model, x, cond = _inputs()
    for call in (
        lambda: sample(model, x, cond, steps=2, guidance=guidance),
        lambda: guided_velocity(model, x, {s: torch.zeros(2, dtype=torch.float64) for s in x}, cond, guidance),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith("guidance must be a list of GuidanceBranch (e.g. cfg(4.5)") and why in msg, msg
        assert "\n" not in msg
    assert model.calls == []  # refused before the first model evaluation


def test_a_list_holding_something_else_names_its_index():
    model, x, cond = _inputs()
    why = r"^guidance\[1\] must be a GuidanceBranch .* got the string 'modaliti' \(the guidance presets: none, plain, "
    with pytest.raises(ConfigError, match=why + r"modality, modality_text\)$"):
        sample(model, x, cond, steps=2, guidance=[*cfg(2.0), "modaliti"])
    assert model.calls == []


def test_branches_still_sample_and_count_evaluations():
    model, x, cond = _inputs()
    assert sample(model, x, cond, steps=2, guidance=cfg(3.0)).nfe == 4
    assert sample(model, x, cond, steps=2, guidance=tuple(cfg(3.0))).nfe == 4
    assert sample(model, x, cond, steps=2, guidance=[]).nfe == 2


@pytest.mark.parametrize("preset", ["modaliti", "", None])
def test_an_unknown_preset_names_the_presets(preset):
    choices = r"\(choose from none, plain, modality, modality_text\)$"
    with pytest.raises(ConfigError, match=r"^unknown guidance preset .* " + choices):
        preset_branches(preset, cfg_strength=2.0)
