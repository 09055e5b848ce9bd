"""Deterministic, resumable, sharded batches and distributed evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from partialft.errors import PartialFTError, option_error


class ShardedBatches(Sampler[list[int]]):
    """Global batches in an order fixed by (seed, epoch); each process takes its contiguous share.

    Written by hand instead of accelerate's ``prepare_data_loader`` because the order is then a
    pure function of (seed, epoch): a run resumed mid-epoch (``skip``), or run on another number
    of processes, sees exactly the same global batches, which resume and multi-process
    equivalence rely on.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool,
                 drop_last: bool, rank: int = 0, world: int = 1, skip: int = 0,
                 limit: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        self.batches = [order[i:i + batch_size] for i in range(0, stop, batch_size)]
        self.batches = self.batches[skip:limit]
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            share = -(-len(batch) // self.world)  # ceil
            mine = batch[self.rank * share:(self.rank + 1) * share]
            if len(mine):
                yield mine.tolist()

    def __len__(self) -> int:
        return len(self.batches)


class Batches:
    """How a training split is cut into optimizer steps for one run."""

    def __init__(self, n: int, batch_size: int, grad_accum: int, seed: int, rank: int,
                 world: int) -> None:
        if batch_size % world:
            raise PartialFTError(f"batch size {batch_size} does not split over {world} "
                                 f"processes; use a multiple of {world}.")
        micro = (n // batch_size) // grad_accum * grad_accum
        if micro == 0:
            raise option_error(f"the training split has {n} images, fewer than one optimizer "
                               f"step of {batch_size * grad_accum}; lower `batch_size` or "
                               "`grad_accum`.")
        self.n, self.batch_size, self.grad_accum = n, batch_size, grad_accum
        self.seed, self.rank, self.world = seed, rank, world
        self.micro_per_epoch = micro
        self.steps_per_epoch = micro // grad_accum

    def sampler(self, epoch: int, skip_steps: int = 0) -> ShardedBatches:
        return ShardedBatches(self.n, self.batch_size, seed=self.seed, epoch=epoch, shuffle=True,
                              drop_last=True, rank=self.rank, world=self.world,
                              skip=skip_steps * self.grad_accum, limit=self.micro_per_epoch)


class TensorBatches:
    """Batches gathered in one indexing op from an in-memory dataset kept on the device.

    For uint8 tensor datasets (digits, Fashion-MNIST, CIFAR) this replaces the DataLoader: no
    per-item Python, no collate, no host-to-device copy per step, so the loader cannot starve
    the GPU. The device copy is made once per dataset and device.
    """

    def __init__(self, dataset: Any, sampler: Sampler[list[int]], device: torch.device) -> None:
        cache = dataset.__dict__.setdefault("_partialft_device_copy", {})
        if str(device) not in cache:
            cache.clear()
            cache[str(device)] = (dataset.images.to(device), dataset.labels.to(device))
        self.images, self.labels = cache[str(device)]
        self.sampler, self.device = sampler, device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.sampler:
            index = torch.as_tensor(batch, device=self.device)
            yield self.images[index], self.labels[index]

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


def loader(dataset: Dataset, sampler: Sampler[list[int]], workers: int,
           device: torch.device | None = None) -> Any:
    """Batches for ``sampler``: straight from device memory for tensor datasets, else a
    DataLoader (with ``workers`` processes)."""
    tensors = isinstance(getattr(dataset, "images", None), torch.Tensor) and isinstance(
        getattr(dataset, "labels", None), torch.Tensor)
    if device is not None and tensors:
        return TensorBatches(dataset, sampler, device)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False)


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: Dataset, augment: nn.Module, acc: Any,
             batch_size: int, workers: int = 0) -> float:
    """Top-1 accuracy in percent over the whole dataset, summed across processes."""
    if len(dataset) == 0:
        raise option_error("cannot evaluate on an empty split; check `val_fraction` and the "
                           "dataset.")
    was_training = model.training
    model.eval()
    sampler = ShardedBatches(len(dataset), batch_size, seed=0, epoch=0, shuffle=False,
                             drop_last=False, rank=acc.process_index, world=acc.num_processes)
    counts = torch.zeros(2, dtype=torch.float64, device=acc.device)
    for x, y in loader(dataset, sampler, workers, acc.device):
        x, y = x.to(acc.device, non_blocking=True), y.to(acc.device, non_blocking=True)
        with acc.autocast():
            logits = model(augment(x))
        counts[0] += (logits.argmax(-1) == y).sum()
        counts[1] += y.numel()
    counts = acc.reduce(counts, reduction="sum")
    model.train(was_training)
    return float(100.0 * counts[0] / counts[1])
