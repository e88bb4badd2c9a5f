"""Tests for composed-retrieval data (`modeling.data.composed`) and `modeling.evaluation.tasks.composed_metrics`."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling.data.composed import (
    DEFAULT_PHRASINGS,
    catalog_triplets,
    composed_relevance_matrix,
    modification_text,
)
from modeling.data.fashion_iq import (
    FashionIQError,
    fashion_iq_gallery_with_report,
    fashion_iq_gallery_with_report,
    join_captions,
    load_fashion_iq,
    load_fashion_iq_with_report,
)
from modeling.data.catalog import load_catalog
from modeling.evaluation.metrics import ranked_relevance
from modeling.evaluation.tasks import composed_metrics

CATALOG_DIR = Path(os.environ.get("FASHION_CATALOG", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
FIQ_DIR = CATALOG_DIR / "fashion-iq"
needs_catalog = pytest.mark.skipif(
    not (CATALOG_DIR / "metadata.csv").is_file(), reason=f"real catalog not found at {CATALOG_DIR}"
)
needs_fiq = pytest.mark.skipif(not (FIQ_DIR / "captions").is_dir(), reason=f"Fashion-IQ files not found at {FIQ_DIR}")

# The table of fashion-iq/README.md: (triplets, images) per category and split.
FIQ_COUNTS = {
    ("dress", "train"): (5985, 11452), ("dress", "val"): (2017, 3817), ("dress", "test"): (2024, 3818),
    ("shirt", "train"): (5988, 19036), ("shirt", "val"): (2038, 6346), ("shirt", "test"): (2038, 6346),
    ("toptee", "train"): (6027, 16121), ("toptee", "val"): (1961, 5373), ("toptee", "test"): (2056, 5374),
}


def _png(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 5), colour).save(path)


# -- Fashion-IQ on the real caption files ---------------------------------------------------------------------------


@needs_fiq
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fashion_iq_counts_match_readme(split):
    triplets = load_fashion_iq(FIQ_DIR, split=split)
    assert triplets.column_names == ["category", "candidate", "target", "captions", "caption"]
    counts = Counter(triplets["category"])
    assert counts == {category: FIQ_COUNTS[category, split][0] for category in ("dress", "shirt", "toptee")}
    assert all(len(captions) == 2 for captions in triplets["captions"])
    assert all(triplets["candidate"])
    if split == "test":
        assert set(triplets["target"]) == {""}  # the test labels were kept back
    else:
        assert all(triplets["target"])
    assert triplets["caption"] == [join_captions(captions) for captions in triplets["captions"]]


@needs_fiq
def test_fashion_iq_rows_follow_the_file():
    triplets = load_fashion_iq(FIQ_DIR, categories="dress", split="val")
    raw = json.loads((FIQ_DIR / "captions" / "cap.dress.val.json").read_text())
    assert len(triplets) == 2017 and set(triplets["category"]) == {"dress"}
    assert triplets[0] == {
        "category": "dress",
        "candidate": raw[0]["candidate"],
        "target": raw[0]["target"],
        "captions": raw[0]["captions"],
        "caption": "is shiny and silver with shorter sleeves and fit and flare",
    }
    assert [row["target"] for row in raw] == triplets["target"]
    # The shared data folder holding `fashion-iq/` works too.
    assert load_fashion_iq(CATALOG_DIR, categories=["dress"], split="val")["candidate"] == triplets["candidate"]


@needs_fiq
def test_fashion_iq_gallery_counts_match_readme():
    for split in ("val", "test"):
        gallery, _ = fashion_iq_gallery_with_report(FIQ_DIR, categories=("dress", "toptee"), split=split)
        assert gallery.column_names == ["category", "id"]
        assert Counter(gallery["category"]) == {c: FIQ_COUNTS[c, split][1] for c in ("dress", "toptee")}
    # Every val triplet's reference and target are in its category's val gallery.
    gallery, _ = fashion_iq_gallery_with_report(FIQ_DIR, categories="shirt", split="val")
    triplets = load_fashion_iq(FIQ_DIR, categories="shirt", split="val")
    ids = set(gallery["id"])
    assert set(triplets["candidate"]) <= ids and set(triplets["target"]) <= ids


def test_join_captions():
    assert join_captions(["is red", "has long sleeves"]) == "is red and has long sleeves"
    assert join_captions(["  Is shiny. ", " fit and flare?"]) == "Is shiny and fit and flare"
    assert join_captions([" yello and more flowing", "short and black"]) == "yello and more flowing and short and black"
    assert join_captions(["", "is blue"]) == "is blue"
    assert join_captions(["is blue", "  "]) == "is blue"
    assert join_captions(["only one"]) == "only one"


def test_fashion_iq_errors(tmp_path):
    with pytest.raises(FashionIQError, match="does not exist"):
        load_fashion_iq(tmp_path / "nowhere")
    with pytest.raises(FashionIQError, match="captions"):
        load_fashion_iq(tmp_path)  # a folder, but not a Fashion-IQ one
    (tmp_path / "captions").mkdir()
    with pytest.raises(FashionIQError, match="Unknown Fashion-IQ categories"):
        load_fashion_iq(tmp_path, categories=("dress", "shoes"))
    with pytest.raises(FashionIQError, match="Unknown Fashion-IQ split"):
        load_fashion_iq(tmp_path, categories="dress", split="dev")
    with pytest.raises(FashionIQError, match="cap.dress.val.json' does not exist"):
        load_fashion_iq(tmp_path, categories="dress")
    file = tmp_path / "captions" / "cap.dress.val.json"
    file.write_text('[{"candidate": "A", "target": "B", "captions": ["x", "y"]},')
    with pytest.raises(FashionIQError, match="not valid JSON"):
        load_fashion_iq(tmp_path, categories="dress")
    file.write_text('{"candidate": "A"}')
    with pytest.raises(FashionIQError, match="JSON list"):
        load_fashion_iq(tmp_path, categories="dress")
    file.write_text('[{"candidate": "A", "captions": ["x", "y"]}]')
    with pytest.raises(FashionIQError, match="Entry 0 .* no 'target'"):
        load_fashion_iq(tmp_path, categories="dress")
    file.write_text('[{"candidate": "A", "target": "B", "captions": "x"}]')
    with pytest.raises(FashionIQError, match="captions"):
        load_fashion_iq(tmp_path, categories="dress")
    file.write_text('[{"candidate": "A", "target": "B", "captions": ["x", "y"]}]')
    with pytest.raises(FashionIQError, match="image folder .* does not exist"):
        load_fashion_iq(tmp_path, image_dir=tmp_path / "no-images", categories="dress")
    assert isinstance(FashionIQError("x"), ValueError)


# -- Fashion-IQ triplets with stand-in images -----------------------------------------------------------------------


@pytest.fixture()
def fiq_subset(tmp_path):
    """A Fashion-IQ root with the first 4 real val triplets of dress and shirt and 2 real test triplets of dress."""
    root = tmp_path / "fiq"
    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    subset = {}
    for category, split, count in (("dress", "val", 4), ("shirt", "val", 4), ("dress", "test", 2)):
        if (FIQ_DIR / "captions" / f"cap.{category}.{split}.json").is_file():
            rows = json.loads((FIQ_DIR / "captions" / f"cap.{category}.{split}.json").read_text())[:count]
        else:  # the real files are absent: same shape, made-up ASINs
            rows = [{"candidate": f"C{category}{i}", "captions": ["is red", "longer"],
                     **({"target": f"T{category}{i}"} if split != "test" else {})} for i in range(count)]
        (root / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(rows))
        ids = list(dict.fromkeys(asin for row in rows for asin in (row["candidate"], row.get("target")) if asin))
        (root / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(ids))
        subset[category, split] = rows
    return root, subset


def test_fashion_iq_images_flat_and_per_category(fiq_subset, tmp_path, caplog):
    root, subset = fiq_subset
    images = tmp_path / "images"
    dress, shirt = subset["dress", "val"], subset["shirt", "val"]
    for row in dress:  # flat layout, as PNG
        for asin in (row["candidate"], row["target"]):
            _png(images / f"{asin}.png")
    for row in shirt:  # per-category layout, as JPEG
        for asin in (row["candidate"], row["target"]):
            _png(images / "shirt" / f"{asin}.jpg", colour=(0, 0, 200))
    # One missing target and one corrupt reference: both triplets are skipped, not fatal.
    (images / f"{dress[1]['target']}.png").unlink()
    (images / "shirt" / f"{shirt[2]['candidate']}.jpg").write_bytes(b"not an image")

    with caplog.at_level(logging.WARNING, logger="modeling.data.fashion_iq"):
        triplets, skipped = load_fashion_iq_with_report(root, image_dir=images, categories=("dress", "shirt"))
    assert triplets.column_names == ["category", "candidate", "target", "captions", "caption",
                                     "reference_image_path", "target_image_path"]
    broken = {("dress", dress[1]["candidate"]), ("shirt", shirt[2]["candidate"])}
    # Only the damaged triplets go (a shared image can make another triplet of the subset go too).
    assert {(row["category"], row["candidate"]) for row in skipped} >= broken
    assert len(triplets) + len(skipped) == 8
    assert all(
        row["candidate"] != dress[1]["candidate"] for row in triplets if row["category"] == "dress"
    )
    for row in triplets:
        folder = images if row["category"] == "dress" else images / "shirt"
        suffix = ".png" if row["category"] == "dress" else ".jpg"
        assert row["reference_image_path"] == str((folder / f"{row['candidate']}{suffix}").resolve())
        assert row["target_image_path"] == str((folder / f"{row['target']}{suffix}").resolve())
        assert Path(row["target_image_path"]).is_file()
    missing = next(row for row in skipped if row["candidate"] == dress[1]["candidate"])
    assert "no target image" in missing["error"] and dress[1]["target"] in missing["error"]
    corrupt = next(row for row in skipped if row["candidate"] == shirt[2]["candidate"])
    assert "not an image file" in corrupt["error"]
    assert any("Skipped" in message and "dress: " in message and "shirt: " in message for message in caplog.messages)

    # Without decoding, the corrupt file is kept; the missing one still is not.
    unchecked = load_fashion_iq(root, image_dir=images, categories=("dress", "shirt"), check_images=False)
    assert shirt[2]["candidate"] in unchecked["candidate"] and len(unchecked) > len(triplets)
    assert dress[1]["candidate"] not in [r["candidate"] for r in unchecked if r["category"] == "dress"]


def test_fashion_iq_images_extension_order_test_split_and_gallery(fiq_subset, tmp_path):
    root, subset = fiq_subset
    images = tmp_path / "images"
    rows = subset["dress", "test"]
    _png(images / "dress" / f"{rows[0]['candidate']}.png")
    Image.new("RGB", (4, 5)).save(images / "dress" / f"{rows[0]['candidate']}.jpg")  # png is preferred
    Image.new("RGB", (4, 5)).save(images / f"{rows[1]['candidate']}.webp")
    # The test split has no targets: only the reference image is needed.
    triplets, skipped = load_fashion_iq_with_report(root, image_dir=images, categories="dress", split="test")
    assert skipped == [] and len(triplets) == 2
    assert set(triplets["target"]) == {""} and set(triplets["target_image_path"]) == {""}
    assert triplets["reference_image_path"][0].endswith(f"dress/{rows[0]['candidate']}.png")
    assert triplets["reference_image_path"][1].endswith(f"{rows[1]['candidate']}.webp")

    gallery, missing = fashion_iq_gallery_with_report(root, images, categories="dress", split="test")
    assert gallery.column_names == ["category", "id", "image_path"]
    assert sorted(gallery["id"]) == sorted({rows[0]["candidate"], rows[1]["candidate"]})
    assert missing == []
    # No image at all for the val triplets: a clear error, not an empty dataset.
    with pytest.raises(FashionIQError, match="None of the 4 Fashion-IQ val triplets"):
        load_fashion_iq(root, image_dir=tmp_path / "images", categories="shirt")


# -- catalog-derived triplets ---------------------------------------------------------------------------------------

# id, split, articleType, gender, baseColour, usage, season
TINY = [
    ("1", "train", "Shirts", "Men", "Navy Blue", "Casual", "Summer"),
    ("2", "train", "Shirts", "Men", "Red", "Formal", "Summer"),
    ("3", "train", "Shirts", "Men", "Red", "Casual", "Winter"),
    ("4", "train", "Shirts", "Women", "Blue", "Casual", "Summer"),  # no other women's shirt
    ("5", "train", "Tshirts", "Men", "Blue", "Sports", "Fall"),  # no other men's t-shirt
    ("6", "test", "Shirts", "Men", "Green", "Casual", "Summer"),
    ("7", "test", "Shirts", "Men", "Navy Blue", "Casual", "Summer"),
    ("8", "test", "Shirts", "Men", "", "Casual", "Summer"),  # no colour: takes no part
    ("9", "test", "Shirts", "", "Black", "Casual", "Summer"),  # no gender: takes no part
    ("10", "val", "Jeans", "Women", "Blue", "Casual", "Summer"),
    ("11", "val", "Jeans", "Women", "Black", "Casual", "Summer"),
    ("12", "val", "Jeans", "Women", "Grey", "Casual", "Summer"),
    ("13", "val", "Jeans", "Women", "White", "Casual", "Summer"),
]
COLUMNS = ("id", "split", "articleType", "gender", "baseColour", "usage", "season")


@pytest.fixture(scope="module")
def tiny_catalog(tmp_path_factory):
    """The rows above as a catalog folder (metadata.csv + tiny images), loaded with `load_catalog`."""
    folder = tmp_path_factory.mktemp("tiny-catalog")
    lines = [",".join([*COLUMNS, "image", "productDisplayName"])]
    for row in TINY:
        _png(folder / "images" / f"{row[0]}.png")
        lines.append(",".join([*row, f"images/{row[0]}.png", f"Item {row[0]}"]))
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return load_catalog(folder)


def test_catalog_triplets_tiny(tiny_catalog):
    triplets = catalog_triplets(tiny_catalog)
    assert triplets.column_names == ["reference_id", "target_id", "changed_attribute", "reference_value",
                                     "target_value", "modification", "articleType", "gender", "split",
                                     "reference_image_path", "target_image_path"]
    pairs = defaultdict(list)
    for row in triplets:
        pairs[row["reference_id"]].append(row["target_id"])
    # Within train: 1 <-> {2, 3}; within test: 6 <-> 7; within val: 2 of the 3 other jeans colours each.
    assert set(pairs) == {"1", "2", "3", "6", "7", "10", "11", "12", "13"}
    assert len(pairs["1"]) == 1 and pairs["1"][0] in {"2", "3"}  # one distinct other colour (Red)
    assert pairs["2"] == ["1"] and pairs["3"] == ["1"] and pairs["6"] == ["7"] and pairs["7"] == ["6"]
    for reference in ("10", "11", "12", "13"):
        assert len(pairs[reference]) == 2 and len(set(pairs[reference])) == 2 and reference not in pairs[reference]
    six = next(row for row in triplets if row["reference_id"] == "6")
    assert six["reference_value"] == "Green" and six["target_value"] == "Navy Blue"
    assert "navy blue" in six["modification"] and six["split"] == "test"
    assert six["articleType"] == "Shirts" and six["gender"] == "Men" and six["changed_attribute"] == "baseColour"
    assert six["reference_image_path"].endswith("images/6.png") and six["target_image_path"].endswith("images/7.png")

    assert len(catalog_triplets(tiny_catalog, split="test")) == 2
    assert set(catalog_triplets(tiny_catalog, split="train,test")["split"]) == {"train", "test"}
    assert len(catalog_triplets(tiny_catalog, split=["val"], max_per_reference=5)) == 12  # 3 per jeans
    assert len(catalog_triplets(tiny_catalog, split="val", max_per_reference=1)) == 4


def test_catalog_triplets_other_attributes_and_phrasings(tiny_catalog):
    usage = catalog_triplets(tiny_catalog, split="train", change="usage", seed=3)
    assert set(usage["changed_attribute"]) == {"usage"}
    # Shirts/Men in train: 1 Casual, 2 Formal, 3 Casual; 2 asks for "Casual", met by 1 or 3.
    targets = {r["reference_id"]: r["target_id"] for r in usage}
    assert len(usage) == 3 and targets["1"] == "2" and targets["3"] == "2" and targets["2"] in {"1", "3"}
    both = catalog_triplets(tiny_catalog, split="train", change=("usage", "season"), max_per_reference=5)
    assert set(both["changed_attribute"]) == {"usage", "season"}
    for row in both:
        assert row["reference_value"] != row["target_value"]
    custom = catalog_triplets(tiny_catalog, split="test", phrasings={"baseColour": ["only {value} please"]})
    assert sorted(custom["modification"]) == ["only green please", "only navy blue please"]
    looser = catalog_triplets(tiny_catalog, split="train", require_same=("articleType",), max_per_reference=3)
    assert "gender" not in looser.column_names
    # The women's shirt (Blue) now pairs with the men's ones: Navy Blue and Red.
    assert sorted(r["target_value"] for r in looser if r["reference_id"] == "4") == ["Navy Blue", "Red"]

    assert modification_text("baseColour", "Navy Blue", "make it {value}") == "make it navy blue"
    assert modification_text("baseColour", "Multi", "{value} version") == "multicoloured version"
    assert modification_text("usage", "Formal", "for {occasion}") == "for formal occasions"
    assert modification_text("usage", "Sports", "a {adjective} version") == "a sporty version"
    assert modification_text("season", "Summer", "a {value} version") == "a summer version"
    # Every default template names the value.
    for attribute, value in (("baseColour", "Olive Green"), ("usage", "Formal"), ("season", "Winter")):
        for template in DEFAULT_PHRASINGS[attribute]:
            assert value.lower() in modification_text(attribute, value, template)

    with pytest.raises(ValueError, match="Cannot change"):
        catalog_triplets(tiny_catalog, change="articleType")
    with pytest.raises(ValueError, match="cannot both change"):
        catalog_triplets(tiny_catalog, change="baseColour", require_same=("articleType", "baseColour"))
    with pytest.raises(ValueError, match="no items in split"):
        catalog_triplets(tiny_catalog, split="holdout")
    with pytest.raises(ValueError, match="max_per_reference"):
        catalog_triplets(tiny_catalog, max_per_reference=0)


def test_catalog_triplets_accepts_a_frame(tiny_catalog):
    frame = tiny_catalog.remove_columns(["image"]).to_pandas()
    assert catalog_triplets(frame, seed=5).to_list() == catalog_triplets(tiny_catalog, seed=5).to_list()


@pytest.fixture(scope="module")
def real_catalog():
    if not (CATALOG_DIR / "metadata.csv").is_file():
        pytest.skip(f"real catalog not found at {CATALOG_DIR}")
    return load_catalog(CATALOG_DIR, check_images=False)


@needs_catalog
def test_catalog_triplets_real_test_split(real_catalog):
    triplets = catalog_triplets(real_catalog, split="test")
    items = {row["id"]: row for row in real_catalog.select_columns(["id", "split", "articleType", "gender",
                                                                    "baseColour"])}
    test_ids = {item_id for item_id, row in items.items() if row["split"] == "test"}
    assert 2000 < len(triplets) <= 2 * len(test_ids)
    per_reference = Counter(triplets["reference_id"])
    assert max(per_reference.values()) <= 2
    targets_of = defaultdict(list)
    for row in triplets:
        reference, target = items[row["reference_id"]], items[row["target_id"]]
        assert row["reference_id"] in test_ids and row["target_id"] in test_ids and row["split"] == "test"
        assert reference["articleType"] == target["articleType"] == row["articleType"]
        assert reference["gender"] == target["gender"] == row["gender"]
        assert reference["baseColour"] == row["reference_value"] and target["baseColour"] == row["target_value"]
        assert row["reference_value"] and row["target_value"] and row["reference_value"] != row["target_value"]
        colour = row["target_value"].lower()
        assert (colour if colour != "multi" else "multicoloured") in row["modification"]
        targets_of[row["reference_id"]].append(row["target_value"])
    assert all(len(values) == len(set(values)) for values in targets_of.values())
    # Several phrasings are used.
    assert len({text.replace(row, "{}") for text, row in zip(triplets["modification"],
                                                             (v.lower() for v in triplets["target_value"]))}) >= 5

    # Deterministic given the seed, different with another seed.
    assert catalog_triplets(real_catalog, split="test").to_list() == triplets.to_list()
    assert catalog_triplets(real_catalog, split="test", seed=1).to_list() != triplets.to_list()


@needs_catalog
def test_catalog_triplets_real_splits_never_mix(real_catalog):
    split_of = dict(zip(real_catalog["id"], real_catalog["split"]))
    triplets = catalog_triplets(real_catalog)  # all splits at once
    assert set(triplets["split"]) == {"train", "val", "test"}
    for reference, target, split in zip(triplets["reference_id"], triplets["target_id"], triplets["split"]):
        assert split_of[reference] == split_of[target] == split
    train = catalog_triplets(real_catalog, split="train")
    assert len(train) == Counter(triplets["split"])["train"]
    assert {split_of[i] for i in [*train["reference_id"], *train["target_id"]]} == {"train"}


# -- relevance and metrics ------------------------------------------------------------------------------------------


def _brute_force_relevance(gallery, triplet, require_same=("articleType", "gender")):
    out = []
    for row in gallery:
        out.append(
            all(row[name] == triplet[name] for name in require_same)
            and row[triplet["changed_attribute"]] == triplet["target_value"]
            and row["id"] != triplet["reference_id"]
        )
    return np.array(out, dtype=bool)


@needs_catalog
def test_composed_relevance_matches_brute_force(real_catalog):
    test_rows = [index for index, split in enumerate(real_catalog["split"]) if split == "test"]
    gallery = real_catalog.select(test_rows).remove_columns("image").flatten_indices(keep_in_memory=True)
    triplets = catalog_triplets(gallery, change=("baseColour", "usage"), max_per_reference=1, seed=7)
    sample = triplets.select(range(0, len(triplets), max(1, len(triplets) // 25)))
    rows = gallery.to_list()
    relevant, exact = composed_relevance_matrix(gallery, sample)
    assert relevant.shape == exact.shape == (len(sample), len(gallery))
    ids = np.array(gallery["id"])
    for q, triplet in enumerate(sample):
        expected = _brute_force_relevance(rows, triplet)
        np.testing.assert_array_equal(relevant[q], expected)
        np.testing.assert_array_equal(exact[q], ids == triplet["target_id"])
        assert relevant[q][ids == triplet["target_id"]].all() and not relevant[q][ids == triplet["reference_id"]].any()
    # A DataFrame gallery gives the same masks.
    frame = gallery.to_pandas()
    np.testing.assert_array_equal(composed_relevance_matrix(frame, sample)[0], relevant)


def _relevance_of_one(items, triplet, **kwargs):
    """The "any matching item" mask of one triplet (a dict), through `composed_relevance_matrix`."""
    return composed_relevance_matrix(items, {name: [value] for name, value in triplet.items()}, **kwargs)[0][0]


def test_composed_relevance_tiny(tiny_catalog):
    triplet = {"reference_id": "10", "target_id": "11", "changed_attribute": "baseColour",
               "reference_value": "Blue", "target_value": "Black", "articleType": "Jeans", "gender": "Women"}
    assert list(np.flatnonzero(_relevance_of_one(tiny_catalog, triplet))) == [10]  # id 11
    looser = _relevance_of_one(tiny_catalog, {**triplet, "target_value": "Blue", "reference_id": "1"},
                               require_same=("gender",))
    assert list(np.array(tiny_catalog["id"])[looser]) == ["4", "10"]
    # A second triplet asks for a colour and a target absent from the gallery: no relevant item.
    absent = {**triplet, "target_value": "Mauve", "target_id": "99"}
    relevant, exact = composed_relevance_matrix(tiny_catalog, {name: [triplet[name], absent[name]] for name in triplet})
    assert list(relevant.sum(axis=1)) == [1, 0] and list(exact.sum(axis=1)) == [1, 0]
    assert exact[0, 10] and relevant[0, 10]


def _brute_force_recall(scores, relevance, k):
    hits = 0
    for row, rel in zip(scores.tolist(), relevance.tolist()):
        ranking = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        hits += any(rel[j] for j in ranking)
    return hits / len(scores)


@pytest.mark.parametrize("seed", [0, 1])
def test_composed_metrics_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_queries, num_items = 30, 80
    scores = rng.integers(0, 20, size=(num_queries, num_items)).astype(np.float32)  # many ties
    relevant = rng.random((num_queries, num_items)) < 0.03
    exact = np.zeros_like(relevant)
    exact[np.arange(num_queries), rng.integers(0, num_items, num_queries)] = True
    relevant |= exact

    metrics = composed_metrics(relevant, exact, scores=scores)
    assert list(metrics) == ["r@1", "r@10", "r@50", "exact_r@1", "exact_r@10", "exact_r@50"]
    for k in (1, 10, 50):
        assert metrics[f"r@{k}"] == pytest.approx(_brute_force_recall(scores, relevant, k))
        assert metrics[f"exact_r@{k}"] == pytest.approx(_brute_force_recall(scores, exact, k))
    # The same from precomputed top-K relevance.
    top = composed_metrics(ranked_relevance(scores, relevant, 50), ranked_relevance(scores, exact, 50))
    assert top == metrics
    # K < 50: r@50 is left out.
    short = composed_metrics(ranked_relevance(scores, relevant, 10), ranked_relevance(scores, exact, 10))
    assert list(short) == ["r@1", "r@10", "exact_r@1", "exact_r@10"]
    assert composed_metrics(ranked_relevance(scores, relevant, 10)) == {"r@1": metrics["r@1"],
                                                                        "r@10": metrics["r@10"]}


def test_composed_metrics_hand_computed_and_errors():
    rel = np.array([[False, True, False], [False, False, False], [True, False, False]])
    exact = np.array([[False, False, True], [False, False, False], [True, False, False]])
    assert composed_metrics(rel, exact, ks=(1, 3)) == {"r@1": 1 / 3, "r@3": 2 / 3, "exact_r@1": 1 / 3,
                                                       "exact_r@3": 2 / 3}
    with pytest.raises(ValueError, match="same shape"):
        composed_metrics(rel, exact[:, :2])
    with pytest.raises(ValueError, match="fewer than every k"):
        composed_metrics(rel, ks=(10, 50))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        composed_metrics(rel, ks=(0,))
    with pytest.raises(ValueError):
        composed_metrics(np.zeros((0, 3), bool))
