"""The learned fallback of query understanding (`IntentHeads`): linear heads over the MiniLM query embedding,
trained on the item descriptions of the training split, consulted by `QueryParser.parse` for the article type when
the words named none and some words nobody listed; `load_or_fit_intent_heads` reads or fits them for an index."""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from modeling.retrieval.understanding.parser import INTENT_ATTRIBUTES, MIN_VALUE_ITEMS, Intent

logger = logging.getLogger(__name__)

# The learned fallback names only article types: on words nobody listed ("trackies", "sliders", "lippy") the type
# head is often right, while the gender, usage and season heads guess from style ("high heals" -> Men 0.73).
LEARNED_ATTRIBUTES = ("articleType",)
LEARNED_MIN_PROBABILITY = 0.6  # at 0.5, "do these come in brown" was Trousers
LEARNED_CONFIDENCE = 0.6  # times the head's probability


class IntentHeads:
    """The learned fallback: one softmax-regression head per attribute over unit MiniLM embeddings.

    Trained on the item descriptions (title + attribute caption) of the training split, so a query word nobody put
    in the lexicon still counts when MiniLM places it near the descriptions of one type, gender or colour.
    """

    def __init__(self, weights: Mapping[str, tuple[np.ndarray, np.ndarray, Sequence[str]]], num_items: int = 0):
        self.num_items = int(num_items)  # the catalog they were fitted for (a rebuilt index fits them again)
        self.weights = {a: (np.asarray(w, np.float32), np.asarray(b, np.float32), list(labels))
                        for a, (w, b, labels) in weights.items()}

    @classmethod
    def fit(cls, embeddings: np.ndarray, items, attributes: Sequence[str] = INTENT_ATTRIBUTES, epochs: int = 60,
            weight_decay: float = 1e-4, seed: int = 0) -> "IntentHeads":
        """Fit the heads with full-batch L-BFGS (a few seconds for 10k items on a CPU)."""
        import torch

        torch.manual_seed(seed)
        x = torch.from_numpy(np.asarray(embeddings, np.float32))
        weights = {}
        for attribute in attributes:
            if attribute not in items:
                continue
            labels_all = items[attribute].astype(str).to_numpy()
            counts = items[attribute].astype(str).value_counts()
            labels = sorted(v for v, n in counts.items() if n >= MIN_VALUE_ITEMS and v.strip())
            if len(labels) < 2:
                continue
            lookup = {v: i for i, v in enumerate(labels)}
            keep = np.array([v in lookup for v in labels_all])
            y = torch.tensor([lookup[v] for v in labels_all[keep]])
            xs = x[torch.from_numpy(keep)]
            linear = torch.nn.Linear(xs.shape[1], len(labels))
            optimiser = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=epochs, line_search_fn="strong_wolfe")

            def closure():
                optimiser.zero_grad()
                loss = torch.nn.functional.cross_entropy(linear(xs * 10.0), y)
                loss = loss + weight_decay * linear.weight.square().sum()
                loss.backward()
                return loss

            optimiser.step(closure)
            weights[attribute] = (linear.weight.detach().numpy() * 10.0, linear.bias.detach().numpy(), labels)
        return cls(weights)

    def probabilities(self, embedding: np.ndarray) -> dict[str, dict[str, float]]:
        out = {}
        for attribute, (w, b, labels) in self.weights.items():
            logits = w @ np.asarray(embedding, np.float32) + b
            p = np.exp(logits - logits.max())
            p /= p.sum()
            out[attribute] = dict(zip(labels, p.tolist()))
        return out

    def predict(self, embedding: np.ndarray, exclude: Iterable[str] = (),
                min_probability: float = LEARNED_MIN_PROBABILITY) -> list[Intent]:
        """Intents for the `LEARNED_ATTRIBUTES` not in `exclude` whose most likely value reaches
        `min_probability`."""
        out = []
        for attribute, probs in self.probabilities(embedding).items():
            if attribute in set(exclude) or attribute not in LEARNED_ATTRIBUTES:
                continue
            value, p = max(probs.items(), key=lambda kv: kv[1])
            if p >= min_probability:
                out.append(Intent(attribute, (value,), LEARNED_CONFIDENCE * p, "", "learned"))
        return out

    def save(self, path: str | Path) -> None:
        from modeling.utils.io import atomic_write_bytes

        atomic_write_bytes(path, self.to_bytes())

    def to_bytes(self) -> bytes:
        """The heads as an `.npz` file's bytes (`from_bytes` reads them; a vector store keeps them)."""
        import io

        buffer = io.BytesIO()
        arrays = {}
        for attribute, (w, b, labels) in self.weights.items():
            arrays[f"{attribute}.weight"], arrays[f"{attribute}.bias"] = w, b
            arrays[f"{attribute}.labels"] = np.array(labels, dtype=object).astype(str)
        arrays["meta.num_items"] = np.array(self.num_items)
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "IntentHeads":
        import io

        return cls.load(io.BytesIO(data))

    @classmethod
    def load(cls, path) -> "IntentHeads":
        with np.load(path, allow_pickle=False) as data:
            attributes = sorted({k.rsplit(".", 1)[0] for k in data.files} - {"meta"})
            num_items = int(data["meta.num_items"]) if "meta.num_items" in data.files else 0
            return cls({a: (data[f"{a}.weight"], data[f"{a}.bias"], data[f"{a}.labels"].tolist()) for a in attributes},
                       num_items)


INTENT_HEADS_FILE = "intent_heads.npz"


def fit_intent_heads(text_embeddings: np.ndarray, items) -> IntentHeads:
    """The heads fitted on the item texts of the training split (all items when it has no split column or fewer
    than 100 training items); `text_embeddings` aligned with `items`."""
    train = (items["split"].astype(str) == "train").to_numpy() if "split" in items else np.ones(len(items), bool)
    if train.sum() < 100:
        train = np.ones(len(items), bool)
    logger.info("fitting the query-intent heads on %d item texts (once per index)", int(train.sum()))
    heads = IntentHeads.fit(np.asarray(text_embeddings)[train], items[train].reset_index(drop=True))
    heads.num_items = len(items)
    return heads


def load_or_fit_intent_heads(index_dir: str | Path, index) -> IntentHeads | None:
    """The learned fallback of an index folder: read from `intent_heads.npz`, or fitted on the item-text
    embeddings of its training split (all items when it has no split column) and written there (skipped when the
    folder is read-only). None when the index holds no item texts."""
    if getattr(index, "text_embeddings", None) is None:
        return None
    items = index.items
    path = Path(index_dir) / INTENT_HEADS_FILE
    if path.exists():
        try:
            heads = IntentHeads.load(path)
            if heads.num_items == len(items):
                return heads
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("refitting the intent heads: %s unreadable (%s)", path.name, error)
    heads = fit_intent_heads(index.text_embeddings, items)
    try:
        heads.save(path)
    except OSError as error:
        logger.warning("intent heads not cached (%s)", error)
    return heads


__all__ = ["INTENT_HEADS_FILE", "IntentHeads", "fit_intent_heads", "load_or_fit_intent_heads"]
