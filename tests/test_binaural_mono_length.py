"""`avflow binaural --mono FILE` takes the mono's length from its audio stream: a still frame with a few seconds of
sound (a podcast exported as mp4) was 'the mono is 0.062 s long, shorter than the video'."""

from __future__ import annotations

from test_binaural import _inputs
from test_generate_user_media import av_file

from avflow.cli import main
from avflow.data.media import probe


def test_a_mono_in_a_still_frame_mp4_is_as_long_as_its_sound(tmp_path, capsys):
    src, _ = _inputs(tmp_path)  # a 1.25 s video
    mono = av_file(tmp_path / "still_sound.mp4", 1, 16, 3.0)  # one frame, 3 s of sound
    assert probe(mono).duration < 0.5
    out = tmp_path / "out.mp4"
    assert main(["binaural", str(src), "--mono", str(mono), "-o", str(out), "--audio", "replace"]) == 0, (
        capsys.readouterr().err
    )
    said = capsys.readouterr().out
    assert "of 3.0" in said and "the video's length" in said, said  # the rest of the sound: said, not cut silently
