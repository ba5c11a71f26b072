"""CLIP byte-level BPE tokenizer (OpenAI / open_clip `SimpleTokenizer`), offline with the packaged vocabulary.

Text cleaning differs from open_clip in one way: open_clip runs `ftfy.fix_text` first; here only a light
subset of it is applied (NFC normalisation, curly quotes -> straight, fullwidth forms and Latin ligatures
-> ASCII, control characters dropped). Mojibake repair (text decoded with the wrong codec) is not done, so
such text may tokenize differently. HTML unescaping, whitespace collapsing and lower-casing match open_clip.
"""

from __future__ import annotations

import gzip
import html
import unicodedata
from functools import lru_cache
from importlib import resources

import regex
import torch

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SOT, EOT = "<start_of_text>", "<end_of_text>"
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"'})
_LIGATURES = set("\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06\u0132\u0133") | set(map(chr, range(0x1C4, 0x1CD)))


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def _fix_char(ch: str) -> str:
    if "\uff01" <= ch <= "\uff5e" or ch in _LIGATURES or ch == "\u3000":  # fullwidth forms, ligatures
        return unicodedata.normalize("NFKC", ch)
    if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r":
        return ""
    return ch


def clean_text(text: str) -> str:
    """Light ftfy subset, HTML unescape (twice), collapse whitespace, lower-case."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    text = "".join(_fix_char(c) for c in text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class CLIPTokenizer:
    """`tokenizer(texts) -> (B, context_length) int64`: [SOT, tokens..., EOT, 0...]; too long is cut, EOT kept last."""

    def __init__(self, vocab_path: str | None = None, context_length: int = 77):
        if vocab_path is None:
            data = (resources.files("avflow") / "assets" / VOCAB_FILE).read_bytes()
        else:
            with open(vocab_path, "rb") as f:
                data = f.read()
        merges = gzip.decompress(data).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges]
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.context_length = context_length
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self.pattern = regex.compile(
            rf"{SOT}|{EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE
        )
        self._cache: dict[str, str] = {SOT: SOT, EOT: EOT}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> str:
        """Apply the merges to one pre-token; returns space-separated sub-tokens."""
        if word in self._cache:
            return self._cache[word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        out = " ".join(parts)
        self._cache[word] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of one string, without SOT/EOT."""
        ids: list[int] = []
        for piece in self.pattern.findall(clean_text(text)):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(piece).split(" "))
        return ids

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = torch.tensor(ids)
        return out
