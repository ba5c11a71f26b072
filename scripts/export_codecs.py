"""Export a trained world codec run into a codec folder (default: the shipped avflow/assets/codecs).

    python scripts/export_codecs.py video runs/codec_video [--out avflow/assets/codecs] [--world data/world2s]
    python scripts/export_codecs.py audio runs/codec_audio

Takes the run's EMA weights (`ema_<sigma>.safetensors`, the first profile), sets `latent_scale` to the std of the
unscaled latents of the first 64 training clips, and writes the weights (int8 with per-row scales unless
`--storage fp16|fp32`) plus the config into `codecs.json`. A run that froze the encoder (`init.freeze` covers the
codec's encoder keys, e.g. configs/codecs/world_audio_decoder.yaml) keeps the stored encoder tensors and latent scale
of its `init.weights` file byte for byte, so the latent checksum and the models trained on these latents stay valid;
so are the other parts it froze (e.g. the decoder under configs/codecs/world_audio_heads.yaml, which trains only the
decoder heads).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from avflow.cli import Parser
    from avflow.codecs.world import STORAGE
    from avflow.errors import AvflowError, first_line

    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["video", "audio"])
    parser.add_argument("run", type=Path, help="training output folder (has config.yaml and ema_*.safetensors)")
    parser.add_argument("--out", type=Path, default=REPO / "avflow" / "assets" / "codecs")
    parser.add_argument("--world", default=None, help="world dataset for the latent scale (default: the run's)")
    parser.add_argument("--storage", choices=STORAGE, default="int8", help="weights on disk (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (args.run / "config.yaml").is_file():
        parser.error(f"{args.run}: not a training output folder (no config.yaml)")
    try:
        return export(args)
    except AvflowError as exc:
        print(f"export_codecs.py: error: {first_line(exc)}", file=sys.stderr)
        return 2


def export(args: argparse.Namespace) -> int:
    """Write the codec of the run `args.run` (its EMA, else its model weights) to `args.out`."""
    from avflow.codecs.world import save_codec
    from avflow.config import from_dict, read_yaml
    from avflow.errors import ConfigError
    from avflow.train.components import MODELS
    from avflow.train.datasets import WorldClips, WorldClipsConfig
    from avflow.weights import load_strict, read_state_dict

    config = read_yaml(args.run / "config.yaml")
    name = (config.get("model") or {}).get("name")
    if name not in MODELS:
        raise ConfigError(f"{args.run / 'config.yaml'}: unknown model.name {name!r} (choose from {', '.join(MODELS)})")
    spec = MODELS[name]
    model = spec.build(from_dict(spec.config, config["model"]["args"]))
    emas = sorted(args.run.glob("ema_*.safetensors"))
    weights = emas[0] if emas else args.run / "model.safetensors"
    load_strict(model, read_state_dict(weights), str(weights))
    model.eval()
    init = config.get("init") or {}
    frozen = tuple(init.get("freeze") or ())
    encoder = [k for k, _ in model.named_parameters() if k.startswith(model.encoder_keys)]
    if init.get("weights") and frozen and all(k.startswith(frozen) for k in encoder):
        stored = read_state_dict(init["weights"])
        save_codec(model, args.out, args.which, storage=args.storage, encoder_state=stored, frozen=frozen)
        print(f"{args.which} codec from {weights} -> {args.out} (encoder, latent scale and frozen parts "
              f"{', '.join(frozen)} kept from {init['weights']})")
        return 0
    root = args.world or config["data"]["train"]["args"]["root"]
    stream = "frames" if args.which == "video" else "audio"
    clips = WorldClips(WorldClipsConfig(root=root, split="train", streams=(stream,), max_clips=64)).streams[stream]
    torch.manual_seed(0)
    if args.which == "video":
        x = clips.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, T, H, W)
        x = x[:, :, : x.shape[2] // 4 * 4]
    else:
        x = clips[..., : clips.shape[-1] // model.samples_per_latent * model.samples_per_latent]
    scale = model.fit_latent_scale(x)
    save_codec(model, args.out, args.which, storage=args.storage)
    print(f"{args.which} codec from {weights} -> {args.out} (latent_scale {scale:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
