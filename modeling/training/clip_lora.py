"""The CLIP + LoRA task: a pretrained CLIP fine-tuned through LoRA adapters on both towers."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer

from modeling.data.text import normalise_title
from modeling.data.composed import catalog_triplets
from modeling.encoders.loading import encode_images, encode_texts
from modeling.evaluation.tasks import group_by_text
from modeling.models import FashionClipModel
from modeling.retrieval.common.types import composed_query_text
from modeling.training.base import Task, add_shared_argument, clamp_logit_scale
from modeling.training.common import item_texts, retrieval_validation, validation_labels

DEFAULT_CLIP = "openai/clip-vit-base-patch32"


class ClipLoraTask(Task):
    """CLIP + LoRA on both towers: image-text InfoNCE on the catalog plus a composed loss on catalog triplets
    (reference + "make it blue" -> target), with the combiner trained jointly. Images are preprocessed per batch
    by the CLIP image processor."""

    name = "clip-lora"
    epochs, batch_size, lr, weight_decay = 5, 64, 1e-4, 0.05
    val_keys = ("p@10", "top1", "r@10")

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("clip-lora")
        g.add_argument("--base-model", default=DEFAULT_CLIP, help="CLIP checkpoint (Hub id or folder)")
        g.add_argument("--lora-rank", type=int, default=8)
        g.add_argument("--lora-alpha", type=int, default=16)
        g.add_argument("--composed-loss-weight", type=float, default=1.0,
                       help="clip-lora: weight of the composed loss on catalog triplets (0 = image-text only)")
        add_shared_argument(g, "--combiner-hidden-size")
        add_shared_argument(g, "--title-prob")

    def __init__(self, settings, train_ds, val_ds=None):
        super().__init__(settings)
        s = settings
        self.model = FashionClipModel.from_clip_pretrained(
            s.base_model, lora_rank=s.lora_rank, lora_alpha=s.lora_alpha,
            combiner_hidden_size=s.combiner_hidden_size, composed_loss_weight=s.composed_loss_weight,
            composition_method="combiner" if s.composed_loss_weight > 0 and s.combiner_hidden_size else "sum")
        self.tokenizer = AutoTokenizer.from_pretrained(s.base_model)
        self.processor = AutoImageProcessor.from_pretrained(s.base_model)
        self.images = list(train_ds.select_columns(["image"])["image"])
        titles, captions = item_texts(train_ds)
        self.texts = sorted(set(titles) | set(captions))
        text_id = {t: i for i, t in enumerate(self.texts)}
        self.title_ids = torch.tensor([text_id[t] for t in titles])
        self.caption_ids = torch.tensor([text_id[c] for c in captions])
        self.num_examples = len(train_ds)
        self.triplets = None
        if s.composed_loss_weight > 0:
            triplets = catalog_triplets(train_ds, seed=s.seed)
            position = {str(i): n for n, i in enumerate(train_ds["id"])}
            items = train_ds.select_columns(["articleType", "gender"]).to_list()
            rows = triplets.to_list()
            self.triplets = {
                "reference": [position[str(r["reference_id"])] for r in rows],
                "target": [position[str(r["target_id"])] for r in rows],
                "text": [composed_query_text(r["modification"], items[position[str(r["reference_id"])]])
                         for r in rows],
            } if rows else None
        if val_ds is not None:
            val_titles, _ = item_texts(val_ds)
            self.val = {"images": list(val_ds.select_columns(["image"])["image"]),
                        "labels": validation_labels(val_ds),
                        "title_groups": group_by_text([normalise_title(t) for t in val_titles])}

    def _pixels(self, positions, device):
        return self.processor([self.images[i] for i in positions], return_tensors="pt")["pixel_values"].to(device)

    def _tokens(self, texts, device):
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt").to(device)

    def step(self, model, positions: torch.Tensor, device):
        use_title = torch.rand(len(positions)) < self.settings.title_prob
        ids = torch.where(use_title, self.title_ids[positions], self.caption_ids[positions])
        tok = self._tokens([self.texts[i] for i in ids.tolist()], device)
        batch = {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"],
                 "pixel_values": self._pixels(positions.tolist(), device),
                 "positive_mask": (ids[:, None] == ids[None, :]).to(device)}
        if self.triplets is not None:
            pick = torch.randint(len(self.triplets["reference"]), (len(positions),)).tolist()
            mod = self._tokens([self.triplets["text"][i] for i in pick], device)
            batch.update(reference_pixel_values=self._pixels([self.triplets["reference"][i] for i in pick], device),
                         target_pixel_values=self._pixels([self.triplets["target"][i] for i in pick], device),
                         modification_input_ids=mod["input_ids"], modification_attention_mask=mod["attention_mask"])
        out = model(**batch, return_loss=True)
        terms = {"contrastive": out.contrastive_loss}
        if out.composed_loss is not None:
            terms["composed"] = out.composed_loss
        return out.loss, terms

    def after_optimizer_step(self, model) -> None:
        clamp_logit_scale(model)

    @torch.inference_mode()
    def validate(self, model) -> dict:
        texts, groups = self.val["title_groups"]
        return retrieval_validation(encode_images(model, self.processor, self.val["images"]), self.val["labels"],
                                    encode_texts(model, self.tokenizer, texts), groups)

    def save(self, model, output: Path) -> None:
        model.save_pretrained(output)  # the LoRA adapter and combiner only; config names the base CLIP
        self.tokenizer.save_pretrained(output)
        self.processor.save_pretrained(output)


__all__ = ["DEFAULT_CLIP", "ClipLoraTask"]
