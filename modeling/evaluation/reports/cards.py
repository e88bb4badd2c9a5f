"""
Hugging Face model cards: YAML metadata with a model-index built from plain metric dicts (`eval_results`), the
rendered card (`render_model_card`), its results block (`results_block`, between the `RESULTS_START` and
`RESULTS_END` marker comments), an offline validation (`check_model_card`) and an atomic write that never
replaces a valid card with an invalid one (`write_model_card`). The texts of this project's cards are in
`modeling.evaluation.reports.model_card`.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modeling.evaluation.reports.tables import is_number
from modeling.utils.io import atomic_write_text

RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"
DEFAULT_TAGS = ("fashion", "image-retrieval", "text-to-image-retrieval", "composed-image-retrieval", "multimodal")
_REQUIRED_METRIC_KEYS = ("task_type", "dataset_name", "dataset_type", "split", "metric_type", "value")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def eval_results(metrics: Sequence[Mapping[str, Any]]) -> list:
    """
    `huggingface_hub.EvalResult`s from plain metric dicts `{"task_type", "dataset_name", "dataset_type", "split",
    "metric_type", "metric_name", "value"}` (optional: `task_name`, `dataset_config`).

    The model-index wants an id as `task.type`: a free name such as "image-to-image retrieval" becomes the type
    "image-to-image-retrieval" and, unless `task_name` is given, the task's pretty name. `metric_name` defaults
    to `metric_type`. Values must be finite numbers (numpy scalars are turned into Python numbers so the YAML
    stays plain). Metrics of one (task, dataset, split) group must agree on the dataset's and task's names.
    """
    from huggingface_hub import EvalResult

    results, names = [], {}
    for n, metric in enumerate(metrics):
        missing = [key for key in _REQUIRED_METRIC_KEYS if metric.get(key) in (None, "")]
        if missing:
            raise ValueError(f"metric {n} lacks {missing}")
        value = metric["value"]
        if not is_number(value) or not math.isfinite(float(value)):
            raise ValueError(f"metric {n} ({metric['metric_type']}) has a non-numeric or non-finite value: {value!r}")
        value = int(value) if isinstance(value, numbers.Integral) else float(value)
        task_type = str(metric["task_type"])
        task_slug = _slug(task_type)
        if not task_slug:
            raise ValueError(f"metric {n} has an empty task type")
        task_name = metric.get("task_name") or (task_type if task_slug != task_type else None)
        group = (task_slug, str(metric["dataset_type"]), metric.get("dataset_config"), str(metric["split"]))
        label = (str(metric["dataset_name"]), task_name)
        if names.setdefault(group, label) != label:
            raise ValueError(f"metrics of {group} disagree on dataset or task name: {names[group]} vs {label}")
        results.append(EvalResult(
            task_type=task_slug,
            task_name=task_name,
            dataset_type=str(metric["dataset_type"]),
            dataset_name=str(metric["dataset_name"]),
            dataset_config=metric.get("dataset_config"),
            dataset_split=str(metric["split"]),
            metric_type=str(metric["metric_type"]),
            metric_name=str(metric.get("metric_name") or metric["metric_type"]),
            metric_value=value,
        ))
    return results


def results_block(results_markdown: str, command: str) -> str:
    """What a card holds between `RESULTS_START` and `RESULTS_END`: the results and the command that made them."""
    command = command.strip()
    if "\n" in command:
        produced = f"Produced by:\n\n```bash\n{command}\n```"
    else:
        ticks = "``" if "`" in command else "`"
        space = " " if ticks == "``" else ""
        produced = f"Produced by: {ticks}{space}{command}{space}{ticks}"
    return f"{results_markdown.strip()}\n\n{produced}"


def _fenced(code: str, language: str) -> str:
    code = code.strip("\n")
    return code if code.lstrip().startswith("```") else f"```{language}\n{code}\n```"


def _check_texts(**texts: Any) -> None:
    """`ValueError` naming the first of `texts` (in the order given) that is not a non-empty string."""
    for name, value in texts.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string")


def _default_summary(results: list, model_path_or_repo: str, base_model: str | None) -> str:
    """The card's one-line summary: the model, what it was fine-tuned from, and the tasks it was evaluated on."""
    tasks = list(dict.fromkeys(r.task_name or r.task_type for r in results))
    return (f"`{model_path_or_repo}`" + (f", fine-tuned from `{base_model}`" if base_model else "")
            + f", evaluated on {', '.join(tasks)}.")


def _training_text(training_data: str, datasets: list[str]) -> str:
    """The training-data section: `training_data`, the datasets, and a note on the data's licence unless
    `training_data` already speaks of it."""
    training = training_data.strip()
    if datasets:
        training += "\n\nDatasets: " + ", ".join(f"`{d}`" for d in datasets) + "."
    if not re.search(r"licen[cs]e", training_data, flags=re.IGNORECASE):
        training += ("\n\nThe training data's own licence has not been verified; the licence above covers this "
                     "model, not the data.")
    return training


def render_model_card(
    *,
    model_name: str,
    model_path_or_repo: str,
    base_model: str | None,
    datasets: Sequence[str],
    metrics: Sequence[Mapping[str, Any]],
    results_markdown: str,
    command: str,
    intended_use: str,
    training_data: str,
    evaluation_protocol: str,
    limitations: str,
    usage_snippet: str,
    license: str = "apache-2.0",
    library_name: str = "transformers",
    tags: Sequence[str] = DEFAULT_TAGS,
    pipeline_tag: str | None = None,
    extra_sections: Mapping[str, str] | None = None,
    summary: str | None = None,
) -> str:
    """
    A Hugging Face model card: YAML metadata (license, library_name, base_model, datasets, tags, pipeline_tag,
    model-index built from `metrics`, see [`eval_results`]) and the sections title, summary, intended use, how to
    load, training data, evaluation protocol, results, `extra_sections` (title -> markdown, in order) and
    limitations.

    The results section holds `results_markdown` and "Produced by: `command`" (`results_block(md, command)`)
    between the `RESULTS_START` and `RESULTS_END` marker comments. The training-data section gets a sentence
    saying the data's own licence is unverified unless `training_data` already speaks of the licence. The card is
    checked with [`check_model_card`] before it is returned.

    Returns:
        The card as text, ending with a newline.
    """
    from huggingface_hub import ModelCardData

    _check_texts(model_name=model_name, model_path_or_repo=model_path_or_repo, results_markdown=results_markdown,
                 command=command, intended_use=intended_use, training_data=training_data,
                 evaluation_protocol=evaluation_protocol, limitations=limitations, usage_snippet=usage_snippet,
                 license=license)
    if not metrics:
        raise ValueError("the model-index needs at least one metric")
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    results = eval_results(metrics)
    data = ModelCardData(
        license=license,
        library_name=library_name,
        base_model=base_model or None,
        datasets=datasets or None,
        tags=list(tags) or None,
        pipeline_tag=pipeline_tag,
        model_name=model_name,
        eval_results=results,
    )
    if summary is None:
        summary = _default_summary(results, model_path_or_repo, base_model)
    sections = [
        f"# {model_name.strip()}",
        summary.strip(),
        "## Intended use",
        intended_use.strip(),
        "## How to load",
        f"From `{model_path_or_repo}`:",
        _fenced(usage_snippet, "python"),
        "## Training data",
        _training_text(training_data, datasets),
        "## Evaluation protocol",
        evaluation_protocol.strip(),
        "## Results",
        f"{RESULTS_START}\n{results_block(results_markdown, command)}\n{RESULTS_END}",
    ]
    for title, body in (extra_sections or {}).items():
        sections += [f"## {title}", str(body).strip()]
    sections += ["## Limitations", limitations.strip()]
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    check_model_card(text)
    return text


def write_model_card(path: str | os.PathLike, text: str, *, check: bool = True) -> Path:
    """
    Writes a model card atomically. With `check` (default) the card must pass [`check_model_card`] first, so an
    invalid card never replaces a valid one (`ValueError`); a `text` that is not a string raises `TypeError`.
    """
    if not isinstance(text, str):
        raise TypeError(f"model card text must be a str, got {type(text).__name__}")
    if check:
        check_model_card(text)
    return atomic_write_text(path, text)


def _read_card(path_or_text: str | os.PathLike) -> str:
    if isinstance(path_or_text, os.PathLike) or (
        isinstance(path_or_text, str) and "\n" not in path_or_text and not path_or_text.lstrip().startswith("---")
    ):
        path = Path(path_or_text)
        if not path.is_file():
            raise ValueError(f"no model card file at {path}")
        return path.read_text(encoding="utf-8-sig")
    if isinstance(path_or_text, str):
        return path_or_text
    raise TypeError(f"expected a path or the card's text, got {type(path_or_text).__name__}")


def check_model_card(path_or_text: str | os.PathLike) -> dict:
    """
    Validates a model card (a path, or the card's text when it has a line break) and returns its metadata.

    Checks that the YAML front matter exists and parses (the same block `huggingface_hub.repocard.metadata_load`
    reads), that `huggingface_hub.ModelCard` accepts it (including its model-index), that `license` is set, and
    that `model-index` has at least one result, each with `task.type`, `dataset.name`, `dataset.type` and metrics
    with a `type` and a numeric `value`. Raises `ValueError` listing the problems. This runs offline; the Hub's
    own validation (`ModelCard.validate`) needs the network.
    """
    import yaml
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    text = _read_card(path_or_text)
    match = REGEX_YAML_BLOCK.search(text)
    if not match:
        raise ValueError("the model card has no YAML metadata block (--- ... --- at the top)")
    try:
        metadata = yaml.safe_load(match.group(2))
    except yaml.YAMLError as error:
        raise ValueError(f"the model card's metadata is not valid YAML: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError("the model card's metadata must be a mapping")  # noqa: TRY004 -- one error type
    try:
        ModelCard(text, ignore_metadata_errors=False)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"huggingface_hub cannot parse the model card's metadata: {error}") from error

    problems = []
    if not isinstance(metadata.get("license"), str) or not metadata["license"].strip():
        problems.append("no license")
    model_index = metadata.get("model-index")
    if not isinstance(model_index, list) or not model_index:
        problems.append("no model-index")
    else:
        n_results = 0
        for entry in model_index:
            if not isinstance(entry, dict) or not entry.get("name"):
                problems.append("a model-index entry without a name")
                continue
            for result in entry.get("results") or []:
                n_results += 1
                task, dataset = result.get("task") or {}, result.get("dataset") or {}
                if not task.get("type"):
                    problems.append("a result without task.type")
                if not dataset.get("name") or not dataset.get("type"):
                    problems.append("a result without dataset.name and dataset.type")
                metric_list = result.get("metrics") or []
                if not metric_list:
                    problems.append("a result without metrics")
                for metric in metric_list:
                    if not metric.get("type") or not is_number(metric.get("value")):
                        problems.append(f"a metric without a type or a numeric value: {metric}")
        if n_results == 0:
            problems.append("model-index has no results")
    if problems:
        raise ValueError("invalid model card: " + "; ".join(dict.fromkeys(problems)))
    return metadata


__all__ = ["DEFAULT_TAGS", "RESULTS_END", "RESULTS_START", "check_model_card", "eval_results", "render_model_card",
           "results_block", "write_model_card"]
