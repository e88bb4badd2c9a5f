"""The training loop, one for every model: Accelerate steps over a task's examples.

`training_function(args)` builds the task the command line selects (`modeling.training.tasks`), then runs epochs
of Accelerate steps with AdamW + a cosine schedule, an optional weight EMA, validation and an atomic checkpoint
every epoch (`--resume` continues from the last one), and finally saves the model, `training_log.json` and a
training-curve PNG. What differs between models is the task's (see `modeling.training.base.Task`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from modeling.data.catalog import load_catalog
from modeling.training.base import Task
from modeling.training.checkpoints import resume_from_checkpoint, save_checkpoint
from modeling.training.ema import WeightEMA
from modeling.training.sampler import get_dataloaders
from modeling.utils.io import atomic_save, atomic_write_text


def parse_excludes(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--exclude expects FIELD=VALUE, got {pair!r}")
        field, value = pair.split("=", 1)
        out.append((field.strip(), value.strip()))
    return out


def load_splits(args):
    """(train, val or None) catalogs, with --exclude and the size caps applied."""
    excludes = parse_excludes(args.exclude)
    train_ds = load_catalog(args.catalog, split=args.train_split)
    for field, value in excludes:
        if field not in train_ds.column_names:
            raise SystemExit(f"--exclude: the catalog has no column {field!r}")
        train_ds = train_ds.filter(lambda v: v != value, input_columns=[field])
    if args.max_train_items:
        train_ds = train_ds.shuffle(seed=args.seed).select(range(min(args.max_train_items, len(train_ds))))
    if len(train_ds) < 2:
        raise SystemExit(f"not enough training items in split {args.train_split!r} of {args.catalog}")
    val_ds = None
    if args.val_split:
        val_ds = load_catalog(args.catalog, split=args.val_split)
        if args.max_val_items:
            val_ds = val_ds.select(range(min(args.max_val_items, len(val_ds))))
        val_ds = val_ds if len(val_ds) else None
    return train_ds, val_ds, excludes


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases, norms and the logit scale are not decayed."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or name == "logit_scale" else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def plot_curves(history: list[dict], path: Path, val_keys: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="total")
    for term in history[-1].get("terms", {}):
        ax1.plot(epochs, [h.get("terms", {}).get(term) for h in history], label=term)
    ax1.set_xlabel("epoch"), ax1.set_ylabel("training loss"), ax1.legend(), ax1.grid(alpha=0.3)
    for key in val_keys:
        values = [h.get("val", {}).get(key) for h in history]
        if any(v is not None for v in values):
            ax2.plot(epochs, values, marker="o", label=f"val {key}")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("validation retrieval"), ax2.set_ylim(0, 1), ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend()
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def training_function(args: argparse.Namespace, task_cls: type[Task] | None = None) -> dict:
    """Train the task `args` selects (or `task_cls`); returns the run's summary on the main process, {} elsewhere."""
    if task_cls is None:
        from modeling.training.tasks import task_class

        task_cls = task_class(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    output = Path(args.output)
    # `main(argv)` may run several times in one process (tests, notebooks) with another precision each time; the
    # process state (devices, process group) stays, only the accelerator's settings are cleared.
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation_steps)
    set_seed(args.seed)
    started = time.time()

    train_ds, val_ds, excludes = load_splits(args)
    accelerator.print(f"training items: {len(train_ds)}" + (f" (excluded {excludes})" if excludes else ""))
    task = task_cls.from_args(args, train_ds, val_ds)
    model = task.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accelerator.print(f"trainable parameters: {trainable:,} of {sum(p.numel() for p in model.parameters()):,}")

    dataloader = get_dataloaders(accelerator, task.num_examples, args.batch_size, task.group_labels,
                                 task.group_size)
    optimizer = build_optimizer(model, args.lr, args.weight_decay)
    steps_per_epoch = math.ceil(len(dataloader) / args.gradient_accumulation_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=min(steps_per_epoch, 200),
                                                num_training_steps=steps_per_epoch * args.epochs)
    model, optimizer, dataloader, scheduler = accelerator.prepare(model, optimizer, dataloader, scheduler)
    unwrapped = accelerator.unwrap_model(model)  # the one unwrap: hooks, validation and saving get this one
    step_model = unwrapped if task.step_on_unwrapped_model else model
    ema = WeightEMA(unwrapped, args.ema_decay) if args.ema_decay > 0 else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    start_epoch, history = resume_from_checkpoint(accelerator, output) if args.resume else (1, [])

    device = accelerator.device
    for epoch in range(start_epoch, args.epochs + 1):
        set_seed(args.seed + epoch)  # a resumed run sees the same shuffles and augmentations
        model.train()
        total, sums, count = 0.0, {}, 0
        bar = tqdm(dataloader, desc=f"epoch {epoch}/{args.epochs}", disable=not accelerator.is_local_main_process)
        for (positions,) in bar:
            with accelerator.accumulate(model):
                loss, terms = task.step(step_model, positions.cpu(), device)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                task.after_optimizer_step(unwrapped)
                if ema is not None and accelerator.sync_gradients:
                    ema.update(unwrapped)
            count += 1
            total += loss.item()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach() if torch.is_tensor(value) else value)
            bar.set_postfix(loss=f"{total / count:.3f}")
        record = {"epoch": epoch, "train_loss": total / max(count, 1),
                  "terms": {name: value / max(count, 1) for name, value in sums.items()},
                  "elapsed_s": round(time.time() - started, 1)}
        if task.has_validation:
            unwrapped.eval()
            if ema is not None:
                record["val_raw"] = task.validate(unwrapped)
                with ema.applied(unwrapped):
                    record["val"] = task.validate(unwrapped)
            else:
                record["val"] = task.validate(unwrapped)
        history.append(record)
        accelerator.print(json.dumps(record))
        save_checkpoint(accelerator, output, epoch, history, args.keep_checkpoints)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        return _save_run(accelerator, task, unwrapped, ema, args, history, len(train_ds), started)
    return {}


def _save_run(accelerator, task: Task, model, ema, args: argparse.Namespace, history: list, train_items: int,
              started: float) -> dict:
    """The main process's end of a run: the final (EMA) weights, `training_log.json` and the curves; the summary."""
    output = Path(args.output)
    final = model.eval()
    with ema.applied(final) if ema is not None else contextlib.nullcontext():
        task.save(final, output)
    summary = {"args": vars(args), "history": history, "train_items": train_items,
               "train_examples": task.num_examples, "train_seconds": round(time.time() - started, 1)}
    atomic_write_text(output / "training_log.json", json.dumps(summary, indent=2))
    if history:
        plot_curves(history, output / "training_curve.png", task.val_keys)
    accelerator.print(f"saved model to {output} ({summary['train_seconds']:.0f} s)")
    return summary


__all__ = ["build_optimizer", "load_splits", "parse_excludes", "plot_curves", "training_function"]
