"""The registry of training tasks: adding a model is one module with a `Task` subclass and one line here."""

from __future__ import annotations

import argparse

from modeling.training.base import Task
from modeling.training.clip_lora import ClipLoraTask
from modeling.training.composed import ComposedTask
from modeling.training.dual_encoder import DualEncoderTask
from modeling.training.vae import VaeTask

TASKS: dict[str, type[Task]] = {
    "dual-encoder": DualEncoderTask,
    "vae": VaeTask,
    "clip-lora": ClipLoraTask,
    "composed": ComposedTask,
}
assert all(name == task.name for name, task in TASKS.items()), "a TASKS key differs from its task's name"

MODELS = tuple(name for name, task in TASKS.items() if task.stage == "main")  # --model choices
STAGES = ("main", *(task.stage for task in TASKS.values() if task.stage != "main"))  # --stage choices


def task_class(args: argparse.Namespace) -> type[Task]:
    """The task a command line selects: `--stage` when it names one, else `--model`."""
    if args.stage != "main":
        return next(task for task in TASKS.values() if task.stage == args.stage)
    return TASKS[args.model]


__all__ = ["MODELS", "STAGES", "TASKS", "task_class"]
