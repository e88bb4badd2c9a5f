"""The dual encoder task: BERT + CNN, image-text InfoNCE (+ attribute heads, + image-image SupCon)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from modeling.data.text import normalise_title
from modeling.encoders.sentence import resolve_text_model
from modeling.evaluation.tasks import group_by_text
from modeling.models import DualEncoderModel
from modeling.training.augment import augment, background_masks, preload_images, to_pixel_values, world_augment
from modeling.training.base import Task, add_shared_argument, clamp_logit_scale, int_list
from modeling.training.common import (attribute_targets, item_texts, label_codes, retrieval_validation,
                                      validation_labels)
from modeling.training.image_tower import (add_image_tower_arguments, cache_image_features, image_processor,
                                           image_tower_config, load_pretrained_tower)

# Attributes predicted by auxiliary heads; season and year are too noisy to help.
DEFAULT_ATTRIBUTE_HEADS = ("articleType", "subCategory", "baseColour", "gender", "usage")


@torch.inference_mode()
def encode_text_backbone(model: DualEncoderModel, tokenizer, texts: list[str], batch_size: int = 256):
    """Pooled text-tower outputs of unique texts (cached: the frozen tower never changes during training)."""
    out = torch.zeros(len(texts), model.config.text_config.hidden_size)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="caching text tower", unit="batch"):
        idx = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=64, return_tensors="pt")
        out[idx] = model.encode_text_backbone(batch["input_ids"], batch["attention_mask"]).float()
    return out


def build_dual_encoder(settings, train_ds) -> DualEncoderModel:
    """A fresh dual encoder: pretrained text tower, new CNN (or the ImageNet EfficientNet-Lite0 with
    `--image-tower efficientnet-lite0`), attribute heads for the values the split has."""
    heads = {}
    for name in [h for h in settings.attribute_heads.split(",") if h]:
        if name not in train_ds.column_names:
            raise SystemExit(f"--attribute-heads: the catalog has no column {name!r}")
        values = sorted({v for v in train_ds[name] if v})
        if len(values) > 1:
            heads[name] = values
    config_kwargs = dict(
        text_model_name_or_path=settings.text_model,
        text_pooling=settings.text_pooling,
        freeze_text_model=not settings.unfreeze_text,
        text_lora_rank=settings.text_lora_rank,
        projection_dim=settings.projection_dim,
        image_size=int_list(settings.image_size),
        cnn_stem_channels=settings.cnn_stem_channels,
        cnn_channels=int_list(settings.cnn_channels),
        cnn_blocks_per_stage=int_list(settings.cnn_blocks),
        attribute_labels=heads,
        attribute_loss_weight=settings.attribute_loss_weight,
        image_supcon_weight=settings.supcon_weight if settings.supcon_attribute else 0.0,
    )
    config_kwargs.update(image_tower_config(settings))
    model = DualEncoderModel.from_text_pretrained(resolve_text_model(settings.text_model), **config_kwargs)
    load_pretrained_tower(model, settings)
    return model


class DualEncoderTask(Task):
    """BERT + CNN dual encoder: image-text InfoNCE (+ attribute heads, + image-image SupCon).

    A photo is paired with its real title or its attribute caption, drawn at random each time; items whose texts
    are identical are positives of one another. With the text tower frozen (the default) its pooled outputs are
    cached, so a step costs only the CNN.
    """

    name = "dual-encoder"
    epochs, batch_size, lr, weight_decay = 40, 128, 2e-3, 0.05
    # bf16 autocast halves the step time on CPUs with native bf16 (AVX512-BF16/AMX) and on GPUs, at the same
    # accuracy (test P@10 0.745 after 36 bf16 epochs in 20 minutes vs 0.727 after 20 fp32 epochs in 27). The
    # default run (40 epochs, SupCon weight 3 with a 4,096-embedding cross-batch memory) takes 23 minutes on the
    # 2-core machine.
    mixed_precision = "bf16"
    val_keys = ("p@10", "top1", "r@10")

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("dual encoder")
        g.add_argument("--text-model", default="sentence-transformers/all-MiniLM-L6-v2",
                       help="BERT-family text tower (Hub id or folder; MiniLM resolves to the offline PyPI copy)")
        g.add_argument("--text-pooling", choices=["mean", "cls"], default="mean")
        g.add_argument("--text-lora-rank", type=int, default=0, help="train the text tower with LoRA of this rank")
        g.add_argument("--unfreeze-text", action="store_true", help="fine-tune the whole text tower (slow on CPU)")
        g.add_argument("--projection-dim", type=int, default=256)
        add_shared_argument(g, "--image-size")
        g.add_argument("--cnn-stem-channels", type=int, default=32)
        g.add_argument("--cnn-channels", default="48,96,192,384")
        g.add_argument("--cnn-blocks", default="1,1,2,1")
        g.add_argument("--attribute-heads", default=",".join(DEFAULT_ATTRIBUTE_HEADS),
                       help="comma-separated attributes with auxiliary heads ('' for none)")
        g.add_argument("--attribute-loss-weight", type=float, default=1.0)
        g.add_argument("--supcon-attribute", default="articleType",
                       help="images sharing this attribute are positives of an image-image loss ('' to disable)")
        g.add_argument("--supcon-weight", type=float, default=3.0)
        g.add_argument("--supcon-memory", type=int, default=4096,
                       help="cross-batch memory (XBM): the SupCon loss also compares each image with this many "
                            "embeddings of earlier batches (0 = within the batch only)")
        g.add_argument("--supcon-memory-warmup", type=int, default=500,
                       help="training batches before the memory fills (early embeddings move too fast to keep)")
        add_shared_argument(g, "--title-prob")
        g.add_argument("--group-size", type=int, default=1,
                       help="batches are built from runs of this many items sharing the --supcon-attribute value "
                            "(more image-image positives per batch); 1 = plain shuffling")
        g.add_argument("--world-prob", type=float, default=0.35,
                       help="share of training photos shown 'in the world' (studio background replaced, zoomed, "
                            "rotated, relit, blurred, JPEG-compressed) instead of the catalog's mild augmentation; "
                            "0 = studio photos only")
        add_image_tower_arguments(g)

    def __init__(self, settings, train_ds, val_ds=None):
        super().__init__(settings)
        s = settings
        self.model = build_dual_encoder(s, train_ds)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(s.text_model))
        self.processor = image_processor(self.model.config)
        # Texts: one table of unique strings; each item points at its title and its caption in it.
        titles, captions = item_texts(train_ds)
        self.texts = sorted(set(titles) | set(captions))
        text_id = {t: i for i, t in enumerate(self.texts)}
        self.title_ids = torch.tensor([text_id[t] for t in titles])
        self.caption_ids = torch.tensor([text_id[c] for c in captions])
        config = self.model.config
        self.cache_text = config.text_lora_rank == 0 and config.freeze_text_model
        self.text_pooled = encode_text_backbone(self.model, self.tokenizer, self.texts) if self.cache_text else None
        self.images = preload_images(train_ds, self.processor, "loading training images")
        self.masks = background_masks(self.images) if s.world_prob > 0 else None
        # A frozen pretrained tower: its features of each photo, once (the photos themselves are then not kept).
        self.image_features = None
        if config.freeze_image_tower:
            self.image_features = cache_image_features(self.model, self.images, self.processor,
                                                       "caching image tower (train)")
            self.images = None
        self.targets = attribute_targets(train_ds, config.attribute_labels)
        self.num_examples = len(train_ds)
        self.group_size = s.group_size
        if s.supcon_attribute:
            if s.supcon_attribute not in train_ds.column_names:
                raise SystemExit(f"--supcon-attribute: the catalog has no column {s.supcon_attribute!r}")
            self.group_labels = label_codes(train_ds[s.supcon_attribute])
        # Cross-batch memory of the SupCon loss: (embeddings, labels) of recent batches; not checkpointed, so a
        # resumed run refills it.
        self.steps = 0
        self.memory = None
        if self.group_labels is not None and s.supcon_memory > 0 and s.supcon_weight > 0:
            self.memory = (torch.zeros(0, self.model.config.projection_dim), torch.zeros(0, dtype=torch.long))
        if val_ds is not None:
            val_titles, _ = item_texts(val_ds)
            groups = group_by_text([normalise_title(t) for t in val_titles])
            self.val = {"images": preload_images(val_ds, self.processor, "loading validation images"),
                        "labels": validation_labels(val_ds), "title_groups": groups,
                        "title_pooled": encode_text_backbone(self.model, self.tokenizer, groups[0])}
            if config.freeze_image_tower:
                self.val["features"] = cache_image_features(self.model, self.val.pop("images"), self.processor,
                                                            "caching image tower (val)")

    def step(self, model, positions: torch.Tensor, device):
        use_title = torch.rand(len(positions)) < self.settings.title_prob
        ids = torch.where(use_title, self.title_ids[positions], self.caption_ids[positions])
        batch = {
            "positive_mask": (ids[:, None] == ids[None, :]).to(device),
            "attribute_targets": self.targets[positions].to(device) if self.targets.numel() else None,
        }
        if self.image_features is not None:
            batch["image_pooled_output"] = self.image_features[positions].to(device)
        else:
            batch["pixel_values"] = (augment(self.images[positions], self.processor) if self.masks is None else
                                     world_augment(self.images[positions], self.masks[positions], self.processor,
                                                   self.settings.world_prob)).to(device)
        if self.group_labels is not None:
            labels = self.group_labels[positions]
            batch["image_positive_mask"] = (labels[:, None] == labels[None, :]).to(device)
            if self.memory is not None and len(self.memory[1]):
                batch["image_memory_embeds"] = self.memory[0].to(device)
                batch["image_memory_positive_mask"] = (labels[:, None] == self.memory[1][None, :]).to(device)
        if self.cache_text:
            batch["text_pooled_output"] = self.text_pooled[ids].to(device)
        else:
            tok = self.tokenizer([self.texts[i] for i in ids.tolist()], padding=True, truncation=True,
                                 max_length=64, return_tensors="pt").to(device)
            batch["input_ids"], batch["attention_mask"] = tok["input_ids"], tok["attention_mask"]
        out = model(**batch, return_loss=True)
        self.steps += 1
        if self.memory is not None and self.steps > self.settings.supcon_memory_warmup:
            keep = self.settings.supcon_memory  # FIFO: newest first, the oldest fall off the end
            self.memory = (torch.cat([out.image_embeds.detach().float().cpu(), self.memory[0]])[:keep],
                           torch.cat([labels, self.memory[1]])[:keep])
        terms = {"contrastive": out.contrastive_loss}
        if out.attribute_loss is not None:
            terms["attribute"] = out.attribute_loss
        if out.supcon_loss is not None:
            terms["supcon"] = out.supcon_loss
        return out.loss, terms

    def after_optimizer_step(self, model) -> None:
        clamp_logit_scale(model)

    @torch.inference_mode()
    def validate(self, model, batch_size: int = 256) -> dict:
        """Image->image (same articleType) and title->image retrieval on the validation split, visual side only."""
        val = self.val
        if "features" in val:  # frozen tower: its features were computed once
            embeds = F.normalize(model.get_image_features(image_pooled_output=val["features"]), dim=-1).numpy()
        else:
            embeds = torch.cat([
                F.normalize(model.get_image_features(to_pixel_values(val["images"][i:i + batch_size],
                                                                     self.processor)), dim=-1)
                for i in range(0, len(val["images"]), batch_size)
            ]).numpy()
        _, groups = val["title_groups"]
        text_embeds = F.normalize(model.get_text_features(text_pooled_output=val["title_pooled"]), dim=-1).numpy()
        return retrieval_validation(embeds, val["labels"], text_embeds, groups)

    def save(self, model, output: Path) -> None:
        model.save_pretrained(output, safe_serialization=True)
        self.tokenizer.save_pretrained(output)
        self.processor.save_pretrained(output)


__all__ = ["DualEncoderTask", "build_dual_encoder", "encode_text_backbone"]
