"""`prompt_tokens` reads MiniLM's tokenizer once per process: `avflow cache joint` counts every caption's tokens
before it encodes anything, and reading the tokenizer for each took about 33 ms (10k captions: over 5 minutes)."""

from __future__ import annotations

import pytest

from avflow.pipelines import generate


def test_the_tokenizer_is_read_once(monkeypatch):
    transformers = pytest.importorskip("transformers")
    generate._minilm_tokenizer.cache_clear()
    real, reads = transformers.AutoTokenizer.from_pretrained, []

    def counted(*args, **kwargs):
        reads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counted)
    counts = [generate.prompt_tokens(text, "minilm") for text in ("a red ball", "a red ball bounces twice", "x")]
    assert len(reads) == 1 and counts[0] < counts[1]
    generate._minilm_tokenizer.cache_clear()
