"""Tokenised splits as data loaders: dynamic padding, each worker's share, seeded resumable shuffling."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from opdf_ray.data import GlueSplits, load_glue, tokenize
from opdf_ray.parallel import Parallel
from opdf_ray.tasks import Task, task_of


class TokenizedDataset(Dataset):
    """Ragged token lists of one split; every example also carries its ``index`` (KD's cached-logit lookup)."""

    def __init__(self, encoded: dict[str, list]):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded["labels"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.encoded.items()} | {"index": i}


@dataclass
class Data:
    """Tokenised splits and how to batch them."""

    task: Task
    splits: GlueSplits
    encoded: dict[str, dict[str, list]]   # "train", "selection", each dev split, and LGTM's "feedback" if split
    tokenizer: object
    pad_to_multiple_of: int | None = None

    @property
    def feedback_split(self) -> str:
        """Where LGTM's held-out feedback batches come from."""
        return "feedback" if "feedback" in self.encoded else "selection"

    def size(self, name: str) -> int:
        return len(self.encoded[name]["labels"])

    def without_token_types(self) -> None:
        """For a family whose forward takes no ``token_type_ids`` (DistilBERT): batches leave them out."""
        for split in self.encoded.values():
            split.pop("token_type_ids", None)

    def loader(self, name: str, batch_size: int, shuffle: bool, seed: int = 0,
               parallel: Parallel | None = None, group_by_length: bool = False) -> DataLoader:
        """Shuffled: a seeded sampler over this worker's share that reshuffles per ``set_epoch`` (resumable);
        ``group_by_length``: batches of similar length (``LengthGroupedBatches``). Not shuffled: this worker's
        contiguous share (gathered in rank order, no duplicates), shortest examples first."""
        from transformers import DataCollatorWithPadding

        parallel = parallel or Parallel()
        dataset = TokenizedDataset(self.encoded[name])
        collate = DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)  # + mask
        private = torch.Generator().manual_seed(seed)   # loaders never draw from the global RNG (exact resume)
        if shuffle and group_by_length:
            lengths = [len(ids) for ids in self.encoded[name]["input_ids"]]
            batches = LengthGroupedBatches(lengths, batch_size, parallel.world_size, parallel.rank, seed)
            return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, generator=private)
        if shuffle:
            sampler = DistributedSampler(dataset, parallel.world_size, parallel.rank, shuffle=True, seed=seed)
            return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, generator=private)
        ids = self.encoded[name]["input_ids"]            # by length: evaluation pads little (metrics ignore order)
        subset = Subset(dataset, sorted(parallel.shard(len(dataset)).tolist(), key=lambda i: len(ids[i])))
        return DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collate, generator=private)


class LengthGroupedBatches(Sampler):
    """Shuffled batches of examples of similar length, so dynamic padding pads little (HF ``group_by_length``).

    Per epoch (``set_epoch``): a seeded permutation, padded like ``DistributedSampler`` so every worker gets
    ``⌈n/W⌉`` examples; each run of ``group`` global batches (``batch_size × W`` examples each) is sorted by
    length and cut into global batches; the global batches are shuffled; worker r takes the r-th slice of each.
    So the workers of a step hold examples of similar length (no straggler), batch k of an epoch is a function of
    (seed, epoch) only (exact resume), and the number and sizes of batches equal the plain sampler's.
    """

    def __init__(self, lengths: list[int], batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 group: int = 50):
        self.lengths = torch.as_tensor(lengths)
        self.batch_size, self.world_size, self.rank, self.seed, self.group = batch_size, world_size, rank, seed, group
        self.share = -(-len(lengths) // world_size)                    # ⌈n/W⌉, as DistributedSampler pads
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.share // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n, w, b = len(self.lengths), self.world_size, self.batch_size
        order = torch.randperm(n, generator=g)
        order = torch.cat([order, order[:self.share * w - n]]) if self.share * w > n else order
        sizes = [min(b, self.share - k * b) * w for k in range(len(self))]      # global batch sizes; last may be short
        batches, start = [], 0
        for first in range(0, len(sizes), self.group):
            chunk_sizes = sizes[first:first + self.group]
            chunk = order[start:start + sum(chunk_sizes)]
            chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
            batches += list(torch.split(chunk, chunk_sizes))
            start += sum(chunk_sizes)
        for k in torch.randperm(len(batches), generator=g).tolist():
            mine = batches[k].reshape(-1, w)[:, self.rank]        # interleaved: every worker's lengths alike
            yield mine.tolist()


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle a shuffled loader for ``epoch`` (its sampler or its batch sampler)."""
    sampler = loader.batch_sampler if isinstance(loader.batch_sampler, LengthGroupedBatches) else loader.sampler
    sampler.set_epoch(epoch)


def prepare_data(spec, tokenizer, cache_dir: Path, device: torch.device) -> Data:
    """Load the task under the run's protocol (``spec``: a ``RunSpec``) and tokenise every split (cached); batches
    are padded as suits ``device``."""
    feedback = spec.lgtm_feedback if spec.method == "lgtm" else "shared"
    splits = load_glue(task_of(spec), spec.data_dir, spec.selection_fraction, spec.selection_cap, spec.seed,
                       spec.max_train_samples, feedback)
    frames = {"train": splits.train, "selection": splits.selection, **splits.dev}
    encoded = {name: tokenize(df, splits.task, tokenizer, spec.max_length, cache_dir) for name, df in frames.items()}
    if splits.feedback is not splits.selection:              # LGTM's own feedback half (lgtm_feedback=split)
        encoded["feedback"] = tokenize(splits.feedback, splits.task, tokenizer, spec.max_length, cache_dir)
    return Data(splits.task, splits, encoded, tokenizer, spec.padding_multiple_on(device))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def on_device(loader: Iterable[dict], device: torch.device) -> Iterator[dict]:
    for batch in loader:
        yield to_device(batch, device)


def cycle(loader: DataLoader, start: int = 0) -> Iterator:
    """Endless passes over a shuffled ``loader``, reshuffled every pass (``set_epoch``), starting at overall
    batch ``start``: batch k is the same whether or not the run was resumed in between."""
    epoch, skip = divmod(start, len(loader))
    while True:
        set_epoch(loader, epoch)
        for i, batch in enumerate(loader):
            if i >= skip:
                yield batch
        epoch, skip = epoch + 1, 0
