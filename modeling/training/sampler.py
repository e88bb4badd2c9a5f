"""Batches of example positions: shuffled, or in runs of items sharing a label."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset


class GroupedShuffleSampler(Sampler):
    """Every item once per epoch, in runs of `group_size` items that share a label.

    Items are shuffled within their label, cut into runs, and the runs shuffled: a batch then holds several
    members of each label it touches (positives for the image-image loss, hard negatives for the text-image one)
    while labels keep their natural frequency, unlike class-balanced samplers that oversample rare classes.
    Draws from torch's global RNG, which `training_function` seeds per epoch, so a resumed run repeats it.
    """

    def __init__(self, labels: torch.Tensor, group_size: int):
        self.labels, self.group_size = labels, max(1, int(group_size))

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        runs = []
        for label in torch.unique(self.labels):
            members = torch.nonzero(self.labels == label).flatten()
            members = members[torch.randperm(len(members))]
            runs.extend(members.split(self.group_size))
        for i in torch.randperm(len(runs)).tolist():
            yield from runs[i].tolist()


def get_dataloaders(accelerator, num_train: int, batch_size: int,
                    group_labels: torch.Tensor | None = None, group_size: int = 1) -> DataLoader:
    """Batches of item positions; the tensors themselves stay in memory (see `preload_images`)."""
    with accelerator.main_process_first():
        positions = TensorDataset(torch.arange(num_train))
    drop_last = num_train > batch_size
    if group_labels is not None and group_size > 1:
        sampler = GroupedShuffleSampler(group_labels, group_size)
        return DataLoader(positions, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    return DataLoader(positions, batch_size=batch_size, shuffle=True, drop_last=drop_last)


__all__ = ["GroupedShuffleSampler", "get_dataloaders"]
