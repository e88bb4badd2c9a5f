"""The composed stage: a learned combiner over a trained model's frozen embeddings of catalog triplets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from modeling.data.composed import catalog_triplets
from modeling.encoders.loading import encode_images, encode_texts
from modeling.models.losses import composed_relevance_loss
from modeling.retrieval.common.types import composed_query_text
from modeling.training.augment import background_masks, preload_images, world_view
from modeling.training.base import Task, add_shared_argument
from modeling.training.common import label_codes


class ComposedData:
    """Catalog triplets of one split with frozen embeddings: gallery images, reference/target positions, texts."""

    def __init__(self, model, tokenizer, processor, dataset, change: tuple[str, ...], seed: int, desc: str):
        self.triplets = catalog_triplets(dataset, change=change, seed=seed)
        self.world = None  # encoded shopper-like views of the photos (`add_world_views`), training only
        if len(self.triplets) == 0:
            raise SystemExit(f"no composed triplets could be made from the {desc} items (change={change})")
        images = dataset.select_columns(["image"])
        self.gallery = torch.from_numpy(np.concatenate([
            encode_images(model, processor, images[i:i + 256]["image"])
            for i in tqdm(range(0, len(dataset), 256), desc=f"encoding {desc} images", unit="batch")]))
        position = {str(i): n for n, i in enumerate(dataset["id"])}
        rows = self.triplets.to_list()
        self.reference = torch.tensor([position[str(r["reference_id"])] for r in rows])
        self.target = torch.tensor([position[str(r["target_id"])] for r in rows])
        items = dataset.select_columns([c for c in ("articleType", "gender", *change)
                                        if c in dataset.column_names]).to_list()
        contextual = [composed_query_text(r["modification"], items[position[str(r["reference_id"])]]) for r in rows]
        plain = [composed_query_text(r["modification"]) for r in rows]
        unique = sorted(set(contextual) | set(plain))
        text_id = {t: i for i, t in enumerate(unique)}
        self.text_embeds = torch.from_numpy(encode_texts(model, tokenizer, unique, progress=True))
        self.contextual = torch.tensor([text_id[t] for t in contextual])
        self.plain = torch.tensor([text_id[t] for t in plain])
        # Relevance: the reference's articleType and gender, and the target's value of the changed attribute.
        self.same = [label_codes(dataset[a]) for a in ("articleType", "gender")]
        self.change = list(change)
        self.values = torch.stack([label_codes(dataset[a]) if a in dataset.column_names else
                                   torch.full((len(dataset),), -1) for a in self.change])
        self.changed = torch.tensor([self.change.index(r["changed_attribute"]) for r in rows])
        self.target_value = self.values[self.changed, self.target]

    def __len__(self) -> int:
        return len(self.reference)

    @torch.inference_mode()
    def add_world_views(self, model, processor, dataset, batch_size: int = 256) -> None:
        """One "in the world" view of every photo (`world_view`: another background, zoom, light, blur, JPEG),
        encoded once: training references are drawn from these as well as from the studio photos, so the combiner
        learns to compose from a shopper's photo too."""
        images = preload_images(dataset.select_columns(["image"]), processor, "loading images for world views")
        masks = background_masks(images)
        mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        pool = images[torch.randperm(len(images))[:256]].permute(0, 3, 1, 2).float() / 255.0
        out = []
        for i in tqdm(range(0, len(images), batch_size), desc="encoding world views", unit="batch"):
            view = (world_view(images[i:i + batch_size], masks[i:i + batch_size], pool) - mean) / std
            out.append(F.normalize(model.get_image_features(view), dim=-1).float())
        self.world = torch.cat(out)

    def to(self, device) -> "ComposedData":
        """Move the embedding tables next to the model (once); index tensors stay on the CPU."""
        self.gallery, self.text_embeds = self.gallery.to(device), self.text_embeds.to(device)
        if self.world is not None:
            self.world = self.world.to(device)
        return self

    def relevance(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: gallery items that answer triplets `idx` (any matching item; the reference excluded)."""
        ref = self.reference[idx]
        mask = torch.ones(len(idx), len(self.gallery), dtype=torch.bool)
        for codes in self.same:
            mask &= codes[None, :] == codes[ref][:, None]
        mask &= self.values[self.changed[idx]] == self.target_value[idx][:, None]
        mask[torch.arange(len(idx)), ref] = False
        return mask


class ComposedTask(Task):
    """Second stage: a learned combiner over a trained model's frozen embeddings of catalog triplets.

    The composed query must retrieve any item of the reference's type and gender in the target's new value among
    all training items: the loss (`composed_relevance_loss`) is the log of the probability mass (softmax over every
    training item but the reference) that falls on such items, since R@K counts any of them.
    """

    name = stage = "composed"
    epochs, batch_size, lr, weight_decay = 10, 256, 1e-3, 0.05
    val_keys = ("r@10", "exact_r@10", "sum_r@10")
    step_on_unwrapped_model = True  # the step calls get_composed_features, not forward

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("composed stage (and clip-lora's jointly trained combiner)")
        g.add_argument("--init-from", default=None, help="trained model folder the composed stage starts from")
        add_shared_argument(g, "--combiner-hidden-size")
        g.add_argument("--change", default="baseColour",
                       help="comma-separated attributes a catalog triplet may change (baseColour, usage, season)")
        g.add_argument("--attribute-context-prob", type=float, default=0.5,
                       help="chance a training query names the reference's type and gender (as the engine does for "
                            "catalog items) rather than the modification alone (uploads without confident heads)")
        g.add_argument("--world-reference-prob", type=float, default=0.3,
                       help="chance a training reference is a shopper-like view of its photo (another background, "
                            "zoom, light, blur) rather than the studio photo; 0 = studio photos only")

    @classmethod
    def check_arguments(cls, parser, args) -> None:
        if not args.init_from:
            parser.error("--stage composed needs --init-from (a trained model folder)")

    def __init__(self, settings, train_ds, val_ds=None):
        super().__init__(settings)
        s = settings
        self.model = AutoModel.from_pretrained(s.init_from)
        self.tokenizer = AutoTokenizer.from_pretrained(s.init_from)
        self.processor = AutoImageProcessor.from_pretrained(s.init_from)
        if not callable(getattr(self.model, "get_composed_features", None)):
            raise SystemExit(f"{s.init_from} holds a model without composed search (no text tower)")
        if getattr(self.model, "combiner", None) is None:
            self.model.add_combiner(s.combiner_hidden_size)
        self.model.requires_grad_(False)
        self.model.combiner.requires_grad_(True)
        self.model.eval()
        change = tuple(c.strip() for c in s.change.split(",") if c.strip())
        self.train = ComposedData(self.model, self.tokenizer, self.processor, train_ds, change, s.seed, "train")
        if s.world_reference_prob > 0:
            if not hasattr(self.processor, "resize_and_pad"):
                raise SystemExit("--world-reference-prob needs a model with the letterboxing image processor "
                                 "(the dual encoder or the VAE); pass --world-reference-prob 0")
            self.train.add_world_views(self.model, self.processor, train_ds)
        self.val = (ComposedData(self.model, self.tokenizer, self.processor, val_ds, change, s.seed, "val")
                    if val_ds is not None else None)
        self.num_examples = len(self.train)
        scale = getattr(self.model, "logit_scale", None)
        self.scale = float(scale.exp()) if scale is not None else 20.0

    def _queries(self, model, data: ComposedData, idx, contextual, method="combiner", world=None):
        text_ids = torch.where(contextual, data.contextual[idx], data.plain[idx])
        references = data.gallery[data.reference[idx]]
        if world is not None:
            references = torch.where(world[:, None].to(references.device), data.world[data.reference[idx]],
                                     references)
        composed = model.get_composed_features(image_embeds=references,
                                               text_embeds=data.text_embeds[text_ids], method=method)
        return F.normalize(composed, dim=-1)

    def step(self, model, positions: torch.Tensor, device):
        data = self.train if self.train.gallery.device == torch.device(device) else self.train.to(device)
        contextual = torch.rand(len(positions)) < self.settings.attribute_context_prob
        world = (torch.rand(len(positions)) < self.settings.world_reference_prob) if data.world is not None else None
        logits = self.scale * self._queries(model, data, positions, contextual, world=world) @ data.gallery.t()
        logits[torch.arange(len(positions)), data.reference[positions]] = float("-inf")
        loss = composed_relevance_loss(logits, data.relevance(positions).to(logits.device))
        return loss, {"composed": loss}

    @torch.inference_mode()
    def validate(self, model, k: int = 10) -> dict:
        data, out = self.val.to(next(model.parameters()).device), {}
        idx = torch.arange(len(data))
        for method, prefix in (("combiner", ""), ("sum", "sum_")):
            scores = self._queries(model, data, idx, torch.ones(len(idx), dtype=torch.bool), method) @ data.gallery.t()
            scores[idx, data.reference] = float("-inf")
            top = scores.topk(k, dim=-1).indices.cpu()
            out[f"{prefix}r@{k}"] = round(float(data.relevance(idx).gather(1, top).any(-1).float().mean()), 4)
            if not prefix:
                out[f"exact_r@{k}"] = round(float((top == data.target[:, None]).any(-1).float().mean()), 4)
        return out

    def save(self, model, output: Path) -> None:
        model.save_pretrained(output, safe_serialization=True)
        self.tokenizer.save_pretrained(output)
        self.processor.save_pretrained(output)


__all__ = ["ComposedData", "ComposedTask"]
