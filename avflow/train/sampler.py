"""A seeded, resumable batch sampler that splits each global batch across processes and accumulation steps."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from avflow.errors import ConfigError


def check_batch_split(batch_size: int, grad_accum: int, processes: int) -> None:
    """A one-line ConfigError where `train.batch_size` does not split into `grad_accum` micro-batches on each of
    `processes` ranks; `avflow train` calls it when the config loads (WORLD_SIZE), before the model is built."""
    if batch_size % (grad_accum * processes):
        raise ConfigError(f"train.batch_size: {batch_size} is not divisible by grad_accum x processes = "
                          f"{grad_accum} x {processes}")  # fmt: skip


class ResumableBatchSampler:
    """Yields this rank's micro-batches as lists of `(index, epoch)`.

    Epoch e is a permutation seeded by (seed, e); global batch g is `perm[g*B:(g+1)*B]` (incomplete batches are
    dropped), cut into `grad_accum` micro-steps, each split evenly across `world_size` ranks. The position
    (epoch, global batches done) is all that is needed to resume, and it is the same on every rank.
    """

    def __init__(
        self,
        size: int,
        global_batch: int,
        grad_accum: int,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool = True,
        *,
        dataset: str = "the dataset",  # named in the error when it holds less than one batch (e.g. "data.val")
    ):
        check_batch_split(global_batch, grad_accum, world_size)
        if size < global_batch:
            raise ConfigError(f"train.batch_size: {global_batch} is larger than {dataset} ({size} samples)")
        self.size, self.global_batch, self.grad_accum = size, global_batch, grad_accum
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.micro = global_batch // (grad_accum * world_size)
        self.batches_per_epoch = size // global_batch
        self.epoch, self.position = 0, 0

    def set_state(self, epoch: int, position: int) -> None:
        self.epoch, self.position = epoch, position

    def resumed_position(self, epoch: int, position: int, saved_batch: int) -> tuple[int, int]:
        """Where a run goes on that has done `position` global batches of `saved_batch` samples in `epoch`, in
        global batches of this sampler's size: by samples consumed (the epoch's permutation does not depend on the
        batch size), rounded down to a whole batch (at most one batch less one sample seen twice, none skipped);
        the next epoch where this one has no whole batch left."""
        position = position * saved_batch // self.global_batch
        return (epoch, position) if position < self.batches_per_epoch else (epoch + 1, 0)

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = self.permutation(self.epoch).tolist()
        per_micro = self.micro * self.world_size
        for g in range(self.position, self.batches_per_epoch):
            batch = perm[g * self.global_batch : (g + 1) * self.global_batch]
            for m in range(self.grad_accum):
                chunk = batch[m * per_micro : (m + 1) * per_micro]
                yield [(i, self.epoch) for i in chunk[self.rank * self.micro : (self.rank + 1) * self.micro]]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.position) * self.grad_accum
