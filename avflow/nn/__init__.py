"""Building blocks: attention, rotary embeddings, DiT blocks, fusion modules."""
