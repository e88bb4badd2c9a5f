"""Train a fashion search model with Accelerate: one loop, one task per model.

    python train.py --model dual-encoder --catalog ../shared/data --output runs/dual-encoder
    python train.py --model vae --catalog ../shared/data --output runs/vae
    python train.py --stage composed --init-from runs/dual-encoder --output runs/dual-encoder-composed
    python train.py --model clip-lora --base-model openai/clip-vit-base-patch32 --output runs/clip-lora
    accelerate launch train.py ...   # any of the above, on whatever Accelerate is configured for

This script is the wiring: the common flags, each task's own flags, and the output. The loop is
`modeling.training.loop.training_function`: it builds a *task* for the chosen model (`modeling.training.tasks.TASKS`,
protocol in `modeling.training.base.Task`), then runs epochs of Accelerate steps over the task's examples with AdamW
+ cosine schedule, an optional weight EMA, validation and an atomic checkpoint every epoch (`--resume` continues
from the last one), and finally `save_pretrained` plus a training-curve PNG. A task turns a batch of example
positions into a loss, validates, and saves what its model needs; per-model defaults (epochs, batch size, learning
rate, weight decay, mixed precision) are the task's.

- `dual-encoder` learns to put a product photo next to its texts: the real title and the attribute caption
  ("navy blue shirts for men, casual"), drawn at random each time. Items whose texts are identical are positives of
  one another. Auxiliary heads predict catalog attributes from the image embedding and an image-image SupCon loss
  pulls items of one article type together. With the text tower frozen (the default) its pooled outputs are
  cached, so an epoch costs only the CNN: about a minute on two CPU cores.
- `vae` is the unsupervised model: reconstruction + beta * KL on the images alone; it also writes a
  reconstruction grid.
- `clip-lora` fine-tunes a pretrained CLIP through LoRA adapters on both towers: image-text InfoNCE on the catalog
  plus a composed loss on catalog triplets (reference + "make it blue" -> target), combiner trained jointly.
- `--stage composed` trains only a learned combiner on top of a trained text-capable model (`--init-from`), on
  frozen embeddings of catalog triplets: the composed query must retrieve any item of the reference's type and
  gender in the target's new colour among all training items.

`--push-to-hub REPO_ID` then evaluates the saved model on the test split (`modeling.evaluation.suite`) and pushes
the folder with its model card (`modeling.hub.push`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from modeling.training.loop import training_function
from modeling.training.tasks import MODELS, STAGES, TASKS, task_class


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=list(MODELS), default="dual-encoder")
    p.add_argument("--stage", choices=list(STAGES), default="main",
                   help="'composed': train only a learned combiner on top of --init-from")
    p.add_argument("--catalog", default="../shared/data", help="catalog folder, metadata file or Hub dataset id")
    p.add_argument("--output", required=True, help="folder for the final model, checkpoints, log and curve")
    for task in TASKS.values():  # each task's own flags, in a group of its own
        task.add_arguments(p)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help="default depends on the model")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--ema-decay", type=float, default=0.0,
                   help="exponential moving average of the weights, validated and saved (0 to disable)")
    g.add_argument("--gradient-accumulation-steps", type=int, default=1)
    g.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                   help="default: bf16 for the dual encoder, no otherwise")
    g.add_argument("--seed", type=int, default=42)
    g = p.add_argument_group("data and run")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val", help="split reported each epoch ('' to skip validation)")
    g.add_argument("--exclude", action="append", default=[], metavar="FIELD=VALUE",
                   help="drop training items whose FIELD equals VALUE (repeatable), e.g. articleType=Kurtas")
    g.add_argument("--max-train-items", type=int, default=None, help="cap the training set (tests, quick runs)")
    g.add_argument("--max-val-items", type=int, default=None)
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT/checkpoints")
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    g = p.add_argument_group("hub")
    g.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="after training, evaluate on the test split and push the model folder with its card")
    g.add_argument("--push-results", default=None, help="evaluate.py results.json to use instead of a new run")
    g.add_argument("--push-dry-run", default=None, metavar="DIR", help="write the folder to upload here, no upload")
    g.add_argument("--base-model-id", default=None, help="clip-lora: Hub id of the base CLIP to name when pushing")
    args = p.parse_args(argv)
    task = task_class(args)
    task.check_arguments(p, args)
    return task.apply_defaults(args)  # per-model defaults of --epochs, --batch-size, --lr, ...


def push_trained_model(args) -> dict:
    """Evaluate the saved model on the test split (unless results are given) and push it with `modeling.hub.push`."""
    from modeling.hub import push as hub

    if args.push_results is None:
        from modeling.evaluation.suite import evaluate_model_folder

        results = evaluate_model_folder(args.output, args.catalog, "test", Path(args.output) / "eval-hub")
    else:
        results = json.loads(Path(args.push_results).read_text())
    return hub.push_model(args.output, args.push_to_hub, results=results, dry_run=args.push_dry_run,
                          base_model_id=args.base_model_id)


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    summary = training_function(args)
    if args.push_to_hub and summary:
        summary["hub"] = push_trained_model(args)
        print(json.dumps(summary["hub"], indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
