"""The training protocol: the task registry, the abstract `Task`, each task's flags, and the loop's hooks."""

import argparse
import inspect
import math

import pytest
import torch
from transformers import CLIPImageProcessorPil, CLIPModel

import train
from modeling.models.losses import composed_relevance_loss
from modeling.training.base import COMMON_SETTINGS, SHARED_ARGUMENTS, Task, clamp_logit_scale
from modeling.training.clip_lora import ClipLoraTask
from modeling.training.loop import training_function
from modeling.training.tasks import MODELS, STAGES, TASKS, task_class

from .test_modeling_fashion_clip import tiny_clip_config, tiny_tokenizer


def test_registry_holds_the_four_tasks():
    assert list(TASKS) == ["dual-encoder", "vae", "clip-lora", "composed"]
    for name, task in TASKS.items():
        assert issubclass(task, Task) and task.name == name and not inspect.isabstract(task)
        assert task.val_keys and task.epochs > 0 and task.batch_size > 0 and task.lr > 0
        assert task.mixed_precision in ("no", "fp16", "bf16")
    assert MODELS == ("dual-encoder", "vae", "clip-lora") and STAGES == ("main", "composed")
    assert task_class(argparse.Namespace(stage="composed", model="vae")) is TASKS["composed"]
    assert task_class(argparse.Namespace(stage="main", model="vae")) is TASKS["vae"]


TASK_ATTRIBUTES = {"name": "x", "epochs": 1, "batch_size": 1, "lr": 1.0, "val_keys": ()}


def task_methods() -> dict:
    return {"add_arguments": classmethod(lambda cls, parser: None),
            "step": lambda self, model, positions, device: (torch.zeros(()), {}),
            "validate": lambda self, model: {}, "save": lambda self, model, output: None}


def test_an_incomplete_task_cannot_be_instantiated():
    settings = argparse.Namespace()
    type("Complete", (Task,), {**TASK_ATTRIBUTES, **task_methods()})(settings)
    for method in task_methods():
        members = {**TASK_ATTRIBUTES, **{k: v for k, v in task_methods().items() if k != method}}
        with pytest.raises(TypeError, match=method):
            type("NoMethod", (Task,), members)(settings)
    for attribute in TASK_ATTRIBUTES:
        members = {**{k: v for k, v in TASK_ATTRIBUTES.items() if k != attribute}, **task_methods()}
        with pytest.raises(TypeError, match=attribute):
            type("NoAttribute", (Task,), members)(settings)


@pytest.mark.parametrize("name", list(TASKS))
def test_each_task_flags_parse_on_their_own(name):
    task = TASKS[name]
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    assert defaults  # every task has flags of its own
    names = task.setting_names()
    assert set(names) == set(defaults) | set(COMMON_SETTINGS)
    # Their defaults are the ones train.py resolves; the task receives those settings and nothing else.
    args = train.parse_args(["--output", "o", "--init-from", "x", *(["--stage", name] if task.stage != "main"
                                                                   else ["--model", name])])
    for dest, value in defaults.items():
        assert getattr(args, dest) == (value if dest != "init_from" else "x"), dest
    assert args.epochs == task.epochs and args.lr == task.lr and args.mixed_precision == task.mixed_precision
    assert "output" not in names and "catalog" not in names


def test_shared_flags_are_defined_once_and_all_flags_parse_together():
    args = train.parse_args(["--output", "o", "--image-size", "20,16", "--title-prob", "0.3",
                             "--combiner-hidden-size", "8", "--latent-size", "4", "--lora-rank", "2"])
    assert (args.image_size, args.title_prob, args.combiner_hidden_size) == ("20,16", 0.3, 8)
    for flag in SHARED_ARGUMENTS:
        readers = [n for n, t in TASKS.items() if flag.lstrip("-").replace("-", "_") in t.setting_names()]
        assert len(readers) >= 2, (flag, readers)
    with pytest.raises(SystemExit):
        train.parse_args(["--output", "o", "--stage", "composed"])  # the composed stage's own check


def test_composed_relevance_loss_is_minus_log_mass_on_relevant_items():
    logits = torch.tensor([[2.0, 1.0, float("-inf"), 0.0], [0.0, 0.0, 0.0, 0.0]])
    relevant = torch.tensor([[True, False, False, True], [False, True, True, False]])
    p = logits.softmax(-1)
    expected = -(torch.log(p[0, 0] + p[0, 3]) + torch.log(p[1, 1] + p[1, 2])) / 2
    torch.testing.assert_close(composed_relevance_loss(logits, relevant), expected)


def test_clamp_logit_scale_only_touches_a_trained_scale():
    model = torch.nn.Module()
    model.logit_scale = torch.nn.Parameter(torch.tensor(9.0))
    clamp_logit_scale(model)
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    model.logit_scale.requires_grad_(False)
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    clamp_logit_scale(model)
    assert model.logit_scale.item() == 9.0


class CountingTask(Task):
    """A minimal task: a linear model, one flag of its own, and a record of what the loop called."""

    name, epochs, batch_size, lr, val_keys = "counting", 1, 4, 0.1, ()

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--counting-scale", type=float, default=2.0)

    def __init__(self, settings, train_ds, val_ds=None):
        super().__init__(settings)
        self.model = torch.nn.Linear(2, 1)
        self.num_examples = len(train_ds)
        self.calls = {"step": 0, "hook": [], "save": 0}

    def step(self, model, positions, device):
        self.calls["step"] += 1
        x = torch.ones(len(positions), 2) * self.settings.counting_scale
        loss = model(x).pow(2).mean()
        return loss, {"square": loss}

    def after_optimizer_step(self, model):
        self.calls["hook"].append(model)

    def validate(self, model):
        raise AssertionError("no validation split: never called")

    def save(self, model, output):
        self.calls["save"] += 1


def test_the_loop_calls_the_protocol_with_the_task_settings_only(catalog_dir, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(CountingTask, "from_args",
                        classmethod(lambda cls, *a: built.append(Task.from_args.__func__(cls, *a)) or built[-1]))
    args = train.parse_args(["--catalog", str(catalog_dir), "--output", str(tmp_path), "--max-train-items", "8",
                             "--val-split", "", "--batch-size", "4", "--epochs", "1", "--mixed-precision", "no",
                             "--num-threads", "1"])
    args.counting_scale = 3.0
    summary = training_function(args, CountingTask)
    task = built[0]
    assert vars(task.settings) == {"counting_scale": 3.0, "seed": 42}
    assert task.calls["step"] == 2 and task.calls["save"] == 1
    assert len(task.calls["hook"]) == 2 and all(m is task.model for m in task.calls["hook"])  # the unwrapped model
    assert set(summary["history"][0]["terms"]) == {"square"}


def test_a_tiny_clip_run_keeps_the_logit_scale_clamped(catalog_dir, tmp_path, monkeypatch):
    base = tmp_path / "tiny-clip"
    torch.manual_seed(0)
    clip = CLIPModel(tiny_clip_config())
    with torch.no_grad():
        clip.logit_scale.fill_(6.0)  # exp(6) = 403: above CLIP's cap of 100
    clip.save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(base)
    scales = []  # (before, after) the hook, per optimizer step
    original = ClipLoraTask.after_optimizer_step

    def recording(self, model):
        before = model.logit_scale.item()
        original(self, model)
        scales.append((before, model.logit_scale.item()))

    monkeypatch.setattr(ClipLoraTask, "after_optimizer_step", recording)
    summary = train.main(["--model", "clip-lora", "--base-model", str(base), "--catalog", str(catalog_dir),
                          "--output", str(tmp_path / "run"), "--max-train-items", "16", "--val-split", "",
                          "--epochs", "1", "--batch-size", "8", "--lora-rank", "2", "--composed-loss-weight", "0",
                          "--num-threads", "2"])
    assert summary["history"][0]["train_loss"] > 0
    assert len(scales) == 2 and scales[0][0] > math.log(100)  # the optimizer step left it above the cap
    assert all(0 <= after <= math.log(100) + 1e-6 for _, after in scales)
