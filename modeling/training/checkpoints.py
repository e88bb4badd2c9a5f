"""Per-epoch checkpoints of a run (Accelerate state + epoch and history), written whole or not at all."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from modeling.utils.io import atomic_write_text


def list_checkpoints(output: Path) -> list[Path]:
    """Complete checkpoints in `output/checkpoints`, oldest first."""
    folder = Path(output) / "checkpoints"
    found = [p for p in folder.glob("epoch_*") if re.fullmatch(r"epoch_\d+", p.name) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(accelerator, output: Path, epoch: int, history: list, keep: int) -> None:
    """Called on every process (each saves its own RNG state); the main process publishes the folder.

    Every process writes into one temporary folder (a name all of them know, so not a random one), the main process
    adds `state.json` and renames the folder into place, then drops all but the `keep` newest checkpoints."""
    final = Path(output) / "checkpoints" / f"epoch_{epoch}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(tmp / "state.json", json.dumps({"epoch": epoch, "history": history}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # a checkpoint either exists whole or not at all (`list_checkpoints` skips `.tmp`)
        for old in list_checkpoints(output)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)


def resume_from_checkpoint(accelerator, output: Path) -> tuple[int, list]:
    """Load the newest checkpoint into the prepared objects; (first epoch to run, history so far)."""
    found = list_checkpoints(output)
    if not found:
        accelerator.print(f"--resume: no checkpoint in {Path(output) / 'checkpoints'}, starting fresh")
        return 1, []
    accelerator.load_state(str(found[-1]))
    state = json.loads((found[-1] / "state.json").read_text())
    accelerator.print(f"resumed from {found[-1]} (epoch {state['epoch']})")
    return state["epoch"] + 1, state["history"]


__all__ = ["list_checkpoints", "resume_from_checkpoint", "save_checkpoint"]
