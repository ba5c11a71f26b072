"""`avflow binaural`'s inputs: a --seed where nothing samples refused as --steps/--cfg are, the video's own audio cut
to the video's length said as a long --mono's is (tiny media: nothing here needs a trained model)."""

from __future__ import annotations

from test_binaural import _inputs
from test_generate_user_media import av_file

from avflow.cli import main
from avflow.errors import ConfigError
from avflow.pipelines import binaural as binaural_pipeline


def _refused(capsys, argv: list[str]) -> str:
    """The one-line error of `avflow binaural ARGV` (exit 2)."""
    assert main(["binaural", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_a_seed_is_refused_where_nothing_samples(tmp_path, capsys, monkeypatch):
    """`--mode spatialise --seed 5` wrote the same bytes as without it, exit 0: now the --steps/--cfg refusal."""
    import avflow.models.binaural as models

    src, _ = _inputs(tmp_path)
    out = tmp_path / "o.mp4"
    err = _refused(capsys, [str(src), "--mode", "spatialise", "--seed", "5", "-o", str(out)])
    assert "--seed sets the binaural model's sampling, and --mode spatialise spatialises without sampling" in err
    monkeypatch.setattr(models, "MODEL_FILE", tmp_path / "none.safetensors")  # none installed: auto spatialises
    err = _refused(capsys, [str(src), "--seed", "0", "--steps", "4", "-o", str(out)])
    assert "--steps and --seed set the binaural model's sampling, and no binaural model is installed" in err
    assert not out.exists()


def test_the_model_still_samples_with_seed_0_unless_given(tmp_path, capsys, monkeypatch):
    import avflow.models.binaural as models

    src, _ = _inputs(tmp_path)
    installed = tmp_path / "installed.safetensors"
    installed.write_bytes(b"")
    monkeypatch.setattr(models, "MODEL_FILE", installed)
    seeds = []

    def track(video, *, seed, **kwargs):
        seeds.append(seed)
        raise ConfigError("stop")

    monkeypatch.setattr(binaural_pipeline, "binaural_track", track)
    for extra in ([], ["--seed", "5"]):
        _refused(capsys, [str(src), "--mode", "model", "-o", str(tmp_path / "o.mp4"), *extra])
    assert seeds == [0, 5]


def test_the_video_s_own_audio_cut_to_its_length_is_said(tmp_path, capsys):
    """A 1.25 s video with 2.5 s of its own audio wrote a 1.25 s track and said nothing of the rest."""
    src = av_file(tmp_path / "long_sound.mp4", 20, 16, 2.5)  # 20 frames at 16 fps: 1.25 s
    out = tmp_path / "o.mp4"
    assert main(["binaural", str(src), "--mode", "spatialise", "--audio", "replace", "-o", str(out)]) == 0, (
        capsys.readouterr().err
    )
    said = capsys.readouterr().out
    assert "spatialise, from its own audio (its first 1.25 s of 2.5" in said and "the video's length" in said, said
    short, _ = _inputs(tmp_path)  # its audio as long as the video: nothing to say
    assert main(["binaural", str(short), "--mode", "spatialise", "-o", str(tmp_path / "s.mp4")]) == 0
    assert "its first" not in capsys.readouterr().out
