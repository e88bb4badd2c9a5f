"""What every Hub export shares: `HubExportError`, the staged (atomic) output folder, the datasets' licence note."""

from __future__ import annotations

import os

from modeling.utils import io

DATASET_LICENSE_NOTE = (
    "The images and texts come from Myntra via the Kaggle dataset \"Fashion Product Images (Small)\" (Param "
    "Aggarwal). Their own licence could not be verified offline: treat them as research and evaluation data.")


class HubExportError(RuntimeError):
    """A folder cannot be exported as asked (missing results, a folder in the way, a failed verification)."""


def staged_folder(out_dir: str | os.PathLike, marker: str):
    """`modeling.utils.io.staged_folder`, refusing a folder in the way with `HubExportError`."""
    return io.staged_folder(out_dir, marker, error=HubExportError)


__all__ = ["DATASET_LICENSE_NOTE", "HubExportError", "staged_folder"]
