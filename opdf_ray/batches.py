"""Tokenised splits as data loaders: dynamic padding, each worker's share, seeded resumable shuffling."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from opdf_ray.data import GlueSplits, GlueTask, load_glue, tokenize
from opdf_ray.parallel import Parallel


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

    task: GlueTask
    splits: GlueSplits
    encoded: dict[str, dict[str, list]]   # "train", "selection", each dev split, and LGTM's "feedback" if split
    tokenizer: object

    @property
    def feedback_split(self) -> str:
        """Where LGTM's held-out feedback batches come from."""
        return "feedback" if "feedback" in self.encoded else "selection"

    def size(self, name: str) -> int:
        return len(self.encoded[name]["labels"])

    def loader(self, name: str, batch_size: int, shuffle: bool, seed: int = 0,
               parallel: Parallel | None = None) -> DataLoader:
        """Shuffled: a seeded sampler over this worker's share that reshuffles per ``set_epoch`` (resumable).
        Not shuffled: this worker's contiguous share in order (gathered in rank order, no duplicates)."""
        from transformers import DataCollatorWithPadding

        parallel = parallel or Parallel()
        dataset = TokenizedDataset(self.encoded[name])
        collate = DataCollatorWithPadding(self.tokenizer)   # pads ids/types, builds the attention mask
        private = torch.Generator().manual_seed(seed)   # loaders never draw from the global RNG (exact resume)
        if shuffle:
            sampler = DistributedSampler(dataset, parallel.world_size, parallel.rank, shuffle=True, seed=seed)
            return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, generator=private)
        subset = Subset(dataset, parallel.shard(len(dataset)).tolist())
        return DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collate, generator=private)


def prepare_data(spec, tokenizer, cache_dir: Path) -> Data:
    """Load the task under the run's protocol (``spec``: a ``RunSpec``) and tokenise every split (cached)."""
    feedback = spec.lgtm_feedback if spec.method == "lgtm" else "shared"
    splits = load_glue(spec.task, spec.data_dir, spec.selection_fraction, spec.selection_cap, spec.seed,
                       spec.max_train_samples, feedback)
    frames = {"train": splits.train, "selection": splits.selection, **splits.dev}
    encoded = {name: tokenize(df, splits.task, tokenizer, spec.max_length, cache_dir) for name, df in frames.items()}
    if splits.feedback is not splits.selection:              # LGTM's own feedback half (lgtm_feedback=split)
        encoded["feedback"] = tokenize(splits.feedback, splits.task, tokenizer, spec.max_length, cache_dir)
    return Data(splits.task, splits, encoded, tokenizer)


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
        loader.sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if i >= skip:
                yield batch
        epoch, skip = epoch + 1, 0
