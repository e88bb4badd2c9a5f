"""The training protocol: one `Task` per model (open_clip's task pattern), behind one abstract base class.

The shared loop (`modeling.training.loop.training_function`) knows nothing about any model. For each run it:

1. resolves the common hyper-parameters the command line left unset from the task's defaults
   (`Task.apply_defaults`: `epochs`, `batch_size`, `lr`, `weight_decay`, `mixed_precision`);
2. builds the task with `Task.from_args(args, train_ds, val_ds)`: the task receives only its own settings (the
   flags its `add_arguments` declares, plus `COMMON_SETTINGS`) as `self.settings`, and builds `self.model`;
3. batches positions `0 .. task.num_examples - 1` (runs of `task.group_size` items sharing `task.group_labels`
   when the task gives them), and per batch calls `task.step(model, positions, device) -> (loss, terms)`, then
   after every optimizer step the hook `task.after_optimizer_step(unwrapped_model)`;
4. per epoch, when `task.has_validation`, calls `task.validate(unwrapped_model) -> dict` (eval mode, under the
   weight EMA when one is kept) and at the end `task.save(unwrapped_model, output)`; `task.val_keys` name the
   validation metrics the training curve plots.

The loop unwraps the (DDP / Accelerate) model once. `step` gets the prepared model, whose `forward` carries
gradient synchronisation and autocast, unless the task sets `step_on_unwrapped_model` (its step calls other model
methods, which live on the unwrapped model).

Adding a model: one module with a `Task` subclass and one line in `modeling.training.tasks.TASKS`.
"""

from __future__ import annotations

import abc
import argparse
import math
from pathlib import Path
from typing import Any, ClassVar

import torch

# Run-level settings every task may read (besides its own flags).
COMMON_SETTINGS = ("seed",)

# Flags more than one task reads, defined once: each task that reads one adds it with `add_shared_argument`; the
# first task to do so shows it in its group of `--help`.
SHARED_ARGUMENTS: dict[str, dict[str, Any]] = {
    "--image-size": {"default": "80,64", "help": "CNN / VAE input height,width"},
    "--title-prob": {"type": float, "default": 0.6,
                     "help": "chance that a training pair uses the real title rather than the attribute caption"},
    "--combiner-hidden-size": {"type": int, "default": 512,
                               "help": "hidden size of the learned combiner of composed queries"},
}


def add_shared_argument(parser, flag: str) -> None:
    """Add one of `SHARED_ARGUMENTS` to `parser` (a parser or an argument group) unless a task already did."""
    try:
        parser.add_argument(flag, **SHARED_ARGUMENTS[flag])
    except argparse.ArgumentError:
        pass  # another task added it: one definition, one value


def int_list(text: str) -> list[int]:
    """'48,96' -> [48, 96]."""
    return [int(v) for v in text.split(",") if v.strip()]


def clamp_logit_scale(model: torch.nn.Module, max_scale: float = 100.0) -> None:
    """CLIP's clamp of a trained logit scale: a temperature below 1/100 destabilises training."""
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, torch.nn.Parameter) and scale.requires_grad:
        with torch.no_grad():
            scale.clamp_(0, math.log(max_scale))


class Task(abc.ABC):
    """What differs between models; the loop calls only what is declared here.

    Class attributes (every concrete task sets `name` and `val_keys`; the rest have defaults):

    - `name`: registry key, the `--model` value (or the `--stage` value when `stage` is not "main").
    - `stage`: "main" for a model selected by `--model`; any other value is a `--stage` of its own.
    - `epochs`, `batch_size`, `lr`, `weight_decay`, `mixed_precision`: defaults of the common flags.
    - `val_keys`: validation metrics the training curve plots.
    - `step_on_unwrapped_model`: `step` calls model methods other than `forward`, so the loop hands it the
      unwrapped model.

    Instance attributes a task sets in `__init__`: `model` (the module to train), `num_examples` (positions per
    epoch), optionally `val` (validation data; None = no validation), `group_labels` (per-example labels, with
    `group_size` > 1 the batches are built from runs of items sharing one).
    """

    name: ClassVar[str]
    stage: ClassVar[str] = "main"
    epochs: ClassVar[int]
    batch_size: ClassVar[int]
    lr: ClassVar[float]
    weight_decay: ClassVar[float] = 0.0
    mixed_precision: ClassVar[str] = "no"
    val_keys: ClassVar[tuple[str, ...]]
    step_on_unwrapped_model: ClassVar[bool] = False

    def __init__(self, settings: argparse.Namespace):
        missing = [a for a in ("name", "epochs", "batch_size", "lr", "val_keys") if not hasattr(self, a)]
        if missing:  # like an abstract method left out: the task's class attributes must be complete
            raise TypeError(f"task {type(self).__name__} does not define {', '.join(missing)}")
        self.settings = settings
        self.model: torch.nn.Module | None = None
        self.num_examples = 0
        self.val = None
        self.group_labels: torch.Tensor | None = None
        self.group_size = 1

    # -- command line --------------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the task's own flags (in an argument group named after it); flags shared with other tasks through
        `add_shared_argument`."""

    @classmethod
    def check_arguments(cls, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Reject settings the task cannot run with (`parser.error`); called once the task is chosen."""

    @classmethod
    def apply_defaults(cls, args: argparse.Namespace) -> argparse.Namespace:
        """Fill the common hyper-parameters the command line left unset (None, or 0) with this task's defaults."""
        args.epochs = args.epochs or cls.epochs
        args.batch_size = args.batch_size or cls.batch_size
        args.lr = args.lr or cls.lr
        args.weight_decay = cls.weight_decay if args.weight_decay is None else args.weight_decay
        args.mixed_precision = args.mixed_precision or cls.mixed_precision
        return args

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """The settings the task receives: the destinations of its flags, plus `COMMON_SETTINGS`."""
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_arguments(parser)
        return tuple(vars(parser.parse_args([]))) + COMMON_SETTINGS

    @classmethod
    def from_args(cls, args: argparse.Namespace, train_ds, val_ds=None) -> "Task":
        """Build the task from the parsed command line, handing it only its own settings."""
        settings = argparse.Namespace(**{name: getattr(args, name) for name in cls.setting_names()})
        task = cls(settings, train_ds, val_ds)
        if not isinstance(task.model, torch.nn.Module) or task.num_examples < 1:
            raise TypeError(f"{cls.__name__}.__init__ must set `model` and a positive `num_examples`")
        return task

    # -- training ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def step(self, model: torch.nn.Module, positions: torch.Tensor, device) -> tuple[torch.Tensor, dict]:
        """One training batch: example `positions` (a CPU tensor) -> (loss to back-propagate, {term: value} logged
        per epoch). Draws its randomness from torch's global RNG, which the loop seeds per epoch."""

    def after_optimizer_step(self, model: torch.nn.Module) -> None:
        """Hook after every optimizer step, with the unwrapped model (e.g. clamp a learned temperature)."""

    @property
    def has_validation(self) -> bool:
        return self.val is not None

    @abc.abstractmethod
    def validate(self, model: torch.nn.Module) -> dict:
        """Validation metrics of the unwrapped model (in eval mode) on the task's validation data."""

    @abc.abstractmethod
    def save(self, model: torch.nn.Module, output: Path) -> None:
        """Write what loading the trained model needs (weights, config, tokenizer, processor) into `output`."""


__all__ = ["COMMON_SETTINGS", "SHARED_ARGUMENTS", "Task", "add_shared_argument", "clamp_logit_scale", "int_list"]
