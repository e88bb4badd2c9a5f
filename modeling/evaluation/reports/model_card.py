"""The default model's card, regenerated from an evaluate.py run (metadata, model-index and results come from it).

`update_model_card(path, results, results_markdown, row)` renders the whole card: Hugging Face YAML metadata
(license, library_name, base_model, datasets, tags, `model-index` with the measured metrics), intended use, how to
load it, training data, evaluation protocol, the run's results with its command, and limitations.
"""

from __future__ import annotations

import json
from pathlib import Path

from modeling.evaluation.reports.cards import render_model_card, write_model_card

DATASET = {"dataset_name": "Fashion Product Images (Small), Myntra subset", "dataset_type": "myntra-fashion-products"}
CATALOG_DATASET = "paramaggarwal/fashion-product-images-small"

SUMMARY = """\
A dual encoder that puts product photos and shopper text in one 256-d embedding space, the default model of the
fashion search app (text, photo and photo + change search):

- **Text tower**: all-MiniLM-L6-v2 (a 6-layer BERT, frozen) with masked mean pooling and a 2-layer projection.
- **Image tower**: a small ResNet (stem + 4 stages, 48-384 channels, about 3.4 M parameters) for 80x64 letterboxed
  photos, average + max pooled, with a linear projection.
- **Training**: symmetric InfoNCE between each photo and its real title or its attribute caption (items with
  identical text are positives of one another), auxiliary cosine heads for articleType, subCategory, baseColour,
  gender and usage, and an image-image supervised contrastive loss on articleType (weight 3) whose candidates
  include a cross-batch memory of the 4,096 latest training embeddings. 40 epochs with bf16
  autocast on 12,050 training items, about 23 minutes on 2 CPU cores (`make train`).
- **Composed search**: a learned combiner (CLIP4Cir-style gated fusion, 1.4 M parameters) trained in a second stage
  on frozen embeddings of 23,848 catalog triplets of the train split (same articleType and gender, another colour;
  `train.py --stage composed`, about 2 minutes): `model.get_composed_features(image_embeds=..., text_embeds=...)`
  (the combiner by default, `method="sum", text_weight=w` for the weighted sum).

In the search engine, text and composed queries also match the query against each product's own text (MiniLM)
and fuse the two scores; every result carries a VSC score beside its cosine similarity."""

INTENDED_USE = """\
Product search over catalogs of small e-commerce photos: find products by shopper text ("red summer dress"), by a
photo ("more like this"), or by a photo plus a change ("make it blue"). The embeddings also serve as features for
deduplication or attribute prediction. Not intended for identifying people, or for decisions about people."""

TRAINING_DATA = """\
The shared catalog of this project: 14,999 Myntra product photos (60x80 px) with their real titles and attributes
(gender, category, article type, colour, season, usage), a subset of the Kaggle dataset "Fashion Product Images
(Small)" (Param Aggarwal). Split by a hash of the normalised title (train 12,050 / val 1,545 / test 1,404), so items
sharing a title never cross splits. The images belong to Myntra and the brands; the dataset's own licence could not
be verified offline, so treat the data as research and evaluation data."""

PROTOCOL = """\
All numbers come from `evaluate.py` on the test split (gallery = every test item), with the same gallery and
queries for every row:

- **image→image**: every item queries the others; relevant = same articleType. P@10, mAP@10, top-1, P@10 for same
  articleType and colour.
- **title→image**: one query per distinct title; relevant = the items with that title (R@1, R@10, MRR). KAGL:
  one query per item, single target (the fashion-CLIP leaderboards' protocol).
- **shopper queries**: generated from the test split's attribute combinations ("men formal black shoes"); P@10 of
  the search engine's fused ranking (this model's score + a MiniLM and a BM25 keyword match of the item's own
  text).
- **composed**: catalog triplets (reference + "make it blue"); a hit is an item of the reference's type and gender
  in the new colour; the reference is excluded.
- **VSC** (visual-semantic consistency): the cosine of MiniLM embeddings of the query's description and each
  result's title; it shares its encoder with the fused text score."""

LIMITATIONS = """\
- Trained and evaluated on 60x80 px photos of single products on white backgrounds: street photos, several garments
  in one picture, or very different photography retrieve less well, and fine texture (knits, prints) is mostly lost
  at this resolution.
- The text tower is English; titles carry brand names, which the image tower can only learn from appearance.
- Attribute labels of the source catalog are noisy in places (colours especially), which caps the colour metrics.
- Article types absent from training (see the out-of-domain table) are retrieved markedly worse by the model's own
  embeddings; the search engine's item-text match softens this for text queries."""

USAGE = """\
import torch
import modeling.models  # registers the Auto classes
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
from PIL import Image

model = AutoModel.from_pretrained("runs/dual-encoder").eval()
tokenizer = AutoTokenizer.from_pretrained("runs/dual-encoder")
processor = AutoImageProcessor.from_pretrained("runs/dual-encoder")
with torch.inference_mode():
    text = model.get_text_features(**tokenizer(["red summer dress"], return_tensors="pt"))
    image = model.get_image_features(**processor(Image.new("RGB", (60, 80), "red"), return_tensors="pt"))
score = torch.nn.functional.cosine_similarity(text, image)"""


def card_metrics(row: dict, split: str) -> list[dict]:
    """model-index entries of one evaluated model's row (only metrics that were measured)."""
    def metric(task, metric_type, name, value):
        return {"task_type": task, **DATASET, "split": split, "metric_type": metric_type, "metric_name": name,
                "value": round(float(value), 4)} if value is not None else None

    i2i, t2i = row.get("i2i") or {}, row.get("t2i") or {}
    fused = (row.get("queries") or {}).get("fused") or {}
    composed = row.get("composed") or {}
    main = composed.get("variants", {}).get(composed.get("default"), {})
    entries = [
        metric("image-to-image retrieval", "precision_at_10", "P@10 (same articleType)", i2i.get("p@10")),
        metric("image-to-image retrieval", "map_at_10", "mAP@10", i2i.get("map@10")),
        metric("image-to-image retrieval", "accuracy", "top-1 same articleType", i2i.get("top1")),
        metric("image-to-image retrieval", "vsc_at_10", "VSC@10", i2i.get("vsc@10")),
        metric("text-to-image retrieval", "recall_at_1", "title R@1", t2i.get("r@1")),
        metric("text-to-image retrieval", "recall_at_10", "title R@10", t2i.get("r@10")),
        metric("text-to-image retrieval", "mrr", "title MRR", t2i.get("mrr")),
        metric("text-to-image retrieval", "precision_at_10", "shopper queries P@10 (fused)", fused.get("p@10")),
        metric("composed image retrieval", "recall_at_10", "R@10", main.get("r@10")),
        metric("composed image retrieval", "recall_at_50", "R@50", main.get("r@50")),
    ]
    return [e for e in entries if e is not None]


def update_model_card(path: str | Path, results: dict, results_markdown: str, row: dict,
                      summary: str | None = SUMMARY) -> Path:
    """Render the card of the run's first model (`row`, by default described as the dual encoder) and write it
    atomically to `path`."""
    model_dir = Path(row.get("path") or row["model"])
    config = {}
    if (model_dir / "config.json").exists():
        config = json.loads((model_dir / "config.json").read_text())
    base = config.get("text_model_name_or_path") or config.get("base_model_name_or_path")
    if base and Path(str(base)).is_absolute():  # a local copy of a Hub model: name the Hub id
        base = "sentence-transformers/all-MiniLM-L6-v2" if "minilm" in str(base).lower() else None
    card = render_model_card(
        model_name=f"Fashion search: {row['model']}",
        model_path_or_repo=str(model_dir),
        base_model=base,
        datasets=[CATALOG_DATASET],
        metrics=card_metrics(row, results["gallery"]["split"]),
        results_markdown=results_markdown,
        command=results["command"],
        intended_use=INTENDED_USE,
        training_data=TRAINING_DATA,
        evaluation_protocol=PROTOCOL,
        limitations=LIMITATIONS,
        usage_snippet=USAGE,
        tags=("fashion", "image-retrieval", "text-to-image-retrieval", "composed-image-retrieval",
              "dual-encoder", "multimodal"),
        pipeline_tag="feature-extraction",
        summary=summary,
    )
    return write_model_card(path, card)



# -- cards of pushed model folders (one per model; the top-level model_card.md stays the default model's card) ------
PUSHED_USAGE_TEXT = """\
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

repo = "{repo}"  # or a local copy of this folder
model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)  # tokenizer + image preprocessing
inputs = processor(text=["red summer dress"], images=[Image.new("RGB", (60, 80), "red")])
with torch.inference_mode():
    text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    image = model.get_image_features(pixel_values=inputs["pixel_values"])
    composed = model.get_composed_features(image_embeds=image, text_embeds=text)  # photo + change
print("cosine:", torch.nn.functional.cosine_similarity(text, image).item(), "composed:", tuple(composed.shape))
# With this project installed (`pip install fashion-search`), `from modeling import {cls}` and
# `{cls}.from_pretrained(repo)` load the same model without remote code."""

PUSHED_USAGE_IMAGE = """\
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

repo = "{repo}"  # or a local copy of this folder
model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
pixels = processor([Image.new("RGB", (60, 80), "red"), Image.new("RGB", (60, 80), "blue")], return_tensors="pt")
with torch.inference_mode():
    latents = model.get_image_features(**pixels)  # latent means: the retrieval embedding
    reconstructions = model(**pixels).reconstructions
print("cosine:", torch.nn.functional.cosine_similarity(latents[:1], latents[1:]).item(), tuple(reconstructions.shape))
# With this project installed (`pip install fashion-search`), `from modeling import {cls}` and
# `{cls}.from_pretrained(repo)` load the same model without remote code."""

VAE_SUMMARY = """\
A convolutional variational autoencoder of 80x64 product photos, the unsupervised model of the fashion search
project: trained on images alone (no titles, no attributes), its latent mean is an image embedding for "more like
this" search and for re-ranking another model's candidates by visual similarity (hybrid search).

- **Encoder**: strided convolutions ({channels} channels) to a {latent}-d Gaussian latent (mean and log-variance).
- **Decoder**: transposed convolutions back to the image; loss = reconstruction ({recon}) + beta x KL
  (beta = {beta}; beta = 0 is the plain autoencoder).
- **Embedding**: `get_image_features` returns the latent mean (unnormalised; L2-normalise before indexing)."""

CLIP_SUMMARY = """\
CLIP ({base}) with LoRA adapters on the attention projections ({targets}) of both towers, rank {rank}, plus a
learned combiner for composed queries (a reference photo + "make it blue"). This repository holds the adapters,
the combiner and the logit scale only (`adapter_model.safetensors`); loading it downloads the base CLIP named in
`config.json` and applies them. `get_text_features`, `get_image_features` and `get_composed_features` return
unnormalised embeddings; L2-normalise them before indexing."""

MODEL_TAGS = {
    "fashion_dual_encoder": ("fashion", "image-retrieval", "text-to-image-retrieval", "composed-image-retrieval",
                             "dual-encoder", "multimodal"),
    "fashion_vae": ("fashion", "image-retrieval", "vae", "autoencoder", "unsupervised"),
    "fashion_clip": ("fashion", "clip", "lora", "peft", "image-retrieval", "text-to-image-retrieval",
                     "composed-image-retrieval", "multimodal"),
}


def pushed_card_texts(config: dict) -> dict:
    """Summary, usage template (`{repo}` left to fill), tags and base model of a saved model's card."""
    kind = config.get("model_type")
    if kind == "fashion_vae":
        summary = VAE_SUMMARY.format(channels="-".join(str(c) for c in config.get("hidden_channels", [])),
                                     latent=config.get("latent_size"), recon=config.get("reconstruction_loss"),
                                     beta=config.get("beta"))
        usage, base, cls = PUSHED_USAGE_IMAGE, None, "FashionVaeModel"
    elif kind == "fashion_clip":
        base = config.get("base_model_name_or_path")
        targets = config.get("lora_target_modules")
        summary = CLIP_SUMMARY.format(base=base, targets=", ".join(targets) if isinstance(targets, list) else targets,
                                      rank=config.get("lora_rank"))
        usage, cls = PUSHED_USAGE_TEXT, "FashionClipModel"
    elif kind == "fashion_dual_encoder":
        summary, usage, cls = SUMMARY, PUSHED_USAGE_TEXT, "DualEncoderModel"
        base = "sentence-transformers/all-MiniLM-L6-v2"
    else:
        raise ValueError(f"no model card template for model_type {kind!r}")
    return {"summary": summary, "usage": usage.replace("{cls}", cls), "tags": MODEL_TAGS[kind], "base_model": base}


def row_markdown(row: dict, split: str) -> str:
    """A two-column table of one evaluated model's measured metrics."""
    lines = ["| task | metric | value |", "|---|---|---:|"]
    for entry in card_metrics(row, split):
        lines.append(f"| {entry['task_type']} | {entry['metric_name']} | {entry['value']:.3f} |")
    return "\n".join(lines)


def render_pushed_card(model_dir: str | Path, results: dict, row: dict, repo_id: str) -> str:
    """The README.md of a pushed model folder, from the evaluate.py run (`results`) and its row for this model."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    texts = pushed_card_texts(config)
    base = texts["base_model"]
    if base and (Path(str(base)).is_absolute() or Path(str(base)).exists()):
        base = None  # a local folder is no Hub base model
    split = results["gallery"]["split"]
    return render_model_card(
        model_name=f"Fashion search: {row['model']}", model_path_or_repo=repo_id, base_model=base,
        datasets=[CATALOG_DATASET], metrics=card_metrics(row, split), results_markdown=row_markdown(row, split),
        command=results["command"], intended_use=INTENDED_USE, training_data=TRAINING_DATA,
        evaluation_protocol=PROTOCOL, limitations=LIMITATIONS, usage_snippet=texts["usage"].replace("{repo}", repo_id),
        tags=texts["tags"], pipeline_tag="feature-extraction", summary=texts["summary"],
    )


__all__ = ["card_metrics", "pushed_card_texts", "render_pushed_card", "row_markdown", "update_model_card"]
