"""Published retrieval protocols (`modeling.evaluation.protocols`): hand-checked rankings on tiny 2-D features, runners on
stand-in images with fake deterministic encoders."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling.data.fashion_iq import FashionIQError, join_captions
from modeling.evaluation.protocols import (
    Fashion200kError,
    evaluate_fashion200k,
    evaluate_fashion_iq,
    fashion200k_generate_queries,
    fashion200k_modification,
    fashion200k_recall,
    fashion_iq_recall,
    kagl_text_to_image,
    load_fashion200k_labels,
    load_fashion200k_labels_with_report,
    tirg_different_word,
)

FASHION_IQ = Path(__file__).resolve().parents[4] / "shared" / "data" / "fashion-iq"


def _unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def _write_index_image(path: Path, index: int) -> None:
    """A 4x4 solid image whose red channel is `index`: the fake encoders read it back. Always PNG (lossless),
    whatever the extension, as Pillow reads files by content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (index, 0, 0)).save(path, format="PNG")


def _table_encoder(table: np.ndarray, calls: list | None = None):
    def encode_images(images):
        assert all(image.mode == "RGB" for image in images)
        if calls is not None:
            calls.append(len(images))
        return table[[image.getpixel((0, 0))[0] for image in images]]

    return encode_images


# --------------------------------------------------------------------------------------------------------------
# Fashion-IQ
# --------------------------------------------------------------------------------------------------------------

# Gallery on the unit circle: g0 = [1, 0], g1 = [.8, .6], g2 = [0, 1], g3 = [-1, 0].
# Query A = [1, 0]: scores 1, .8, 0, -1 -> ranking 0, 1, 2, 3; target 1, reference 0.
#   kept reference: target at rank 2; reference excluded: ranking 1, 2, 3 -> target at rank 1.
# Query B = [0, 1]: scores 0, .6, 1, 0 -> ranking 2, 1, 0, 3 (0 and 3 tie: lower position first); target 3,
#   reference 2. kept: target at rank 4; excluded: ranking 1, 0, 3 -> rank 3.
IQ_GALLERY = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
IQ_QUERIES = np.array([[1.0, 0.0], [0.0, 1.0]])


def test_fashion_iq_recall_keeps_reference_by_default():
    result = fashion_iq_recall(IQ_QUERIES, IQ_GALLERY, [1, 3], [0, 2], ks=(1, 2, 3))
    assert result == {"r@1": 0.0, "r@2": 0.5, "r@3": 0.5, "mean": pytest.approx(1 / 3), "num_queries": 2}


def test_fashion_iq_recall_exclude_reference():
    result = fashion_iq_recall(IQ_QUERIES, IQ_GALLERY, [1, 3], [0, 2], ks=(1, 2, 3), exclude_reference=True)
    assert result == {"r@1": 0.5, "r@2": 0.5, "r@3": 1.0, "mean": pytest.approx(2 / 3), "num_queries": 2}
    # A reference outside the gallery (-1) removes nothing; scaling features changes nothing (cosine).
    outside = fashion_iq_recall(IQ_QUERIES * 3, IQ_GALLERY * 7, [1, 3], [-1, -1], ks=(1, 2, 3),
                                exclude_reference=True)
    assert outside["r@2"] == 0.5 and outside["r@3"] == 0.5


def test_fashion_iq_recall_defaults_and_ties():
    # Default ks (10, 50) on a 4-item gallery: every target is found.
    assert fashion_iq_recall(IQ_QUERIES, IQ_GALLERY, [1, 3], [0, 2]) == {
        "r@10": 1.0, "r@50": 1.0, "mean": 1.0, "num_queries": 2}
    # g1 and g2 are the same direction ([3, 0] normalises to [1, 0]): the tie goes to the lower position.
    gallery = np.array([[0.0, 1.0], [1.0, 0.0], [3.0, 0.0]])
    query = np.array([[1.0, 0.0]])
    assert fashion_iq_recall(query, gallery, [1], [0], ks=(1,))["r@1"] == 1.0
    assert fashion_iq_recall(query, gallery, [2], [0], ks=(1, 2)) == {
        "r@1": 0.0, "r@2": 1.0, "mean": 0.5, "num_queries": 1}
    # A reference that is its own target always misses once excluded.
    assert fashion_iq_recall(query, gallery, [1], [1], ks=(3,), exclude_reference=True)["r@3"] == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"query_embeds": np.zeros((2, 3))}, "dim"),
        ({"query_embeds": np.array([[np.nan, 0.0], [0.0, 1.0]])}, "NaN"),
        ({"gallery_embeds": np.zeros((0, 2))}, "non-empty"),
        ({"target_positions": [1, 4]}, r"\[0, 4\)"),
        ({"target_positions": [1]}, "shape"),
        ({"target_positions": [1.0, 3.0]}, "integer"),
        ({"reference_positions": [-2, 0]}, r"\[-1, 4\)"),
        ({"ks": ()}, "empty"),
        ({"ks": (0,)}, "positive"),
        ({"chunk": 0}, "chunk"),
    ],
)
def test_fashion_iq_recall_validation(kwargs, message):
    arguments = {"query_embeds": IQ_QUERIES, "gallery_embeds": IQ_GALLERY, "target_positions": [1, 3],
                 "reference_positions": [0, 2]} | kwargs
    with pytest.raises(ValueError, match=message):
        fashion_iq_recall(**arguments)


@pytest.fixture(scope="module")
def fashion_iq_images(tmp_path_factory):
    """Stand-in images for the first 5 dress val triplets (real ASINs) plus 3 gallery-only ASINs."""
    if not (FASHION_IQ / "captions" / "cap.dress.val.json").is_file():
        pytest.skip(f"Fashion-IQ caption files not found at {FASHION_IQ}")
    triplets = json.loads((FASHION_IQ / "captions" / "cap.dress.val.json").read_text())
    split = json.loads((FASHION_IQ / "image_splits" / "split.dress.val.json").read_text())
    first = triplets[:5]
    used = {asin for triplet in triplets for asin in (triplet["candidate"], triplet["target"])}
    extras = [asin for asin in split if asin not in used][:3]  # in the gallery, in no triplet
    # Angles (degrees) of each image's embedding: C = candidate j, T = target j, X = extra.
    angles = {first[0]["candidate"]: 0, first[0]["target"]: 10,
              first[1]["candidate"]: 40, first[1]["target"]: 90, extras[0]: 50,
              first[2]["candidate"]: 120, first[2]["target"]: 125,
              first[3]["candidate"]: 200, first[3]["target"]: 260, extras[1]: 210, extras[2]: 220,
              first[4]["candidate"]: 300, first[4]["target"]: 305}
    assert len(angles) == 13
    folder = tmp_path_factory.mktemp("fashion-iq-images")
    table = np.zeros((256, 2), dtype=np.float32)
    for index, (asin, degrees) in enumerate(angles.items()):
        _write_index_image(folder / "dress" / f"{asin}.png", index)
        table[index] = _unit(degrees)
    return {"dir": folder, "table": table, "triplets": triplets, "split": split, "first": first}


def test_evaluate_fashion_iq_on_real_captions(fashion_iq_images):
    # compose = the reference's own embedding (image-only query). Distances from each candidate, in degrees:
    #   q0 C=0:   C0 0, T0 10                      -> target rank 2 kept, 1 excluded
    #   q1 C=40:  C1 0, X 10, T0 30, C0 40, T1 50  -> rank 5 kept, 4 excluded
    #   q2 C=120: C2 0, T2 5                       -> rank 2, 1
    #   q3 C=200: C3 0, X 10, X 20, T3 60          -> rank 4, 3
    #   q4 C=300: C4 0, T4 5                       -> rank 2, 1
    texts, calls = [], []

    def compose(reference_embeds, batch_texts):
        texts.extend(batch_texts)
        return reference_embeds

    encode = _table_encoder(fashion_iq_images["table"], calls)
    kept = evaluate_fashion_iq(FASHION_IQ, fashion_iq_images["dir"], encode, compose, categories=("dress",),
                               ks=(1, 2, 4), batch_size=8)
    dress = kept["categories"]["dress"]
    assert dress["r@1"] == 0.0 and dress["r@2"] == pytest.approx(3 / 5) and dress["r@4"] == pytest.approx(4 / 5)
    assert dress["mean"] == pytest.approx((0 + 3 / 5 + 4 / 5) / 3)
    assert kept["average"] == {"r@1": dress["r@1"], "r@2": dress["r@2"], "r@4": dress["r@4"],
                               "mean": dress["mean"]}
    assert dress["num_queries"] == kept["num_queries"] == 5
    total = len(fashion_iq_images["triplets"])
    assert dress["num_triplets"] == total and dress["skipped_missing_image"] == total - 5
    assert dress["skipped_target_not_in_gallery"] == 0
    assert dress["gallery_size"] == 13
    assert dress["gallery_missing_images"] == len(set(fashion_iq_images["split"])) - 13
    assert texts == [join_captions(triplet["captions"]) for triplet in fashion_iq_images["first"]]
    assert texts[0] == "is shiny and silver with shorter sleeves and fit and flare"
    assert calls == [8, 5]  # the 13 gallery images once, in batches; references reuse gallery embeddings
    assert kept["exclude_reference"] is False and kept["ks"] == [1, 2, 4]

    excluded = evaluate_fashion_iq(FASHION_IQ, fashion_iq_images["dir"], encode, lambda r, t: r,
                                   categories="dress", ks=(1, 2, 4), exclude_reference=True, max_queries=4)
    dress = excluded["categories"]["dress"]  # the first 4 queries: ranks 1, 4, 1, 3
    assert (dress["r@1"], dress["r@2"], dress["r@4"], dress["num_queries"]) == (0.5, 0.5, 1.0, 4)


def test_evaluate_fashion_iq_errors(fashion_iq_images, tmp_path):
    encode, compose = _table_encoder(fashion_iq_images["table"]), (lambda r, t: r)
    with pytest.raises(FashionIQError, match="Unknown"):
        evaluate_fashion_iq(FASHION_IQ, fashion_iq_images["dir"], encode, compose, categories=("shoes",))
    with pytest.raises(FashionIQError):  # no image of the category at all
        evaluate_fashion_iq(FASHION_IQ, tmp_path, encode, compose, categories=("shirt",))
    with pytest.raises(ValueError, match="max_queries"):
        evaluate_fashion_iq(FASHION_IQ, fashion_iq_images["dir"], encode, compose, max_queries=0)
    with pytest.raises(ValueError, match="encode_images must return"):
        evaluate_fashion_iq(FASHION_IQ, fashion_iq_images["dir"], lambda images: np.zeros((1, 2)), compose,
                            categories="dress")


# --------------------------------------------------------------------------------------------------------------
# Fashion200K
# --------------------------------------------------------------------------------------------------------------


def test_fashion200k_recall_removes_query_image():
    # p0 [1, 0] "a", p1 [.8, .6] "b", p2 [.6, .8] "c", p3 [0, 1] "B " (normalises to "b").
    gallery = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    captions = ["a", "b", "c", "B "]
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # q0 (source 0, target "b"): ranking 1, 2, 3 -> "b" at rank 1.
    # q1 (source 3, target "b"): scores 0, .6, .8, [1 removed] -> ranking 2, 1, 0 -> "b" at rank 2.
    # q2 (source 2, target "a"): scores .6, .96, [1 removed], .8 -> ranking 1, 3, 0 -> "a" at rank 3.
    result = fashion200k_recall(queries, gallery, captions, ["b", "b", "A"], [0, 3, 2], ks=(1, 2, 3))
    assert result == {"r@1": pytest.approx(1 / 3), "r@2": pytest.approx(2 / 3), "r@3": 1.0, "num_queries": 3,
                      "num_queries_without_target": 0}
    # Without removing the source (-1), q1's own image "b" would be first.
    assert fashion200k_recall(queries[1:2], gallery, captions, ["b"], [-1], ks=(1,))["r@1"] == 1.0
    # A target caption no gallery item has is a miss, and counted.
    missing = fashion200k_recall(queries, gallery, captions, ["b", "zzz", "a"], [0, 3, 2], ks=(3,))
    assert missing["r@3"] == pytest.approx(2 / 3) and missing["num_queries_without_target"] == 1


def test_fashion200k_recall_ties_and_validation():
    gallery = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # p0 and p1 tie for [1, 0]
    result = fashion200k_recall([[1.0, 0.0]], gallery, ["x", "y", "z"], ["y"], [2], ks=(1, 2))
    assert (result["r@1"], result["r@2"]) == (0.0, 1.0)  # p0 first (lower position), then p1
    with pytest.raises(ValueError, match="gallery_captions"):
        fashion200k_recall([[1.0, 0.0]], gallery, ["x", "y"], ["y"], [2])
    with pytest.raises(ValueError, match="target_captions"):
        fashion200k_recall([[1.0, 0.0]], gallery, ["x", "y", "z"], ["y", "x"], [2])
    with pytest.raises(ValueError, match="empty"):
        fashion200k_recall([[1.0, 0.0]], gallery, ["x", "y", "z"], ["  "], [2])
    with pytest.raises(ValueError, match="query_positions"):
        fashion200k_recall([[1.0, 0.0]], gallery, ["x", "y", "z"], ["y"], [3])


def test_modification_text_rules():
    assert fashion200k_modification("Black maxi dress", "red  maxi dress") == "replace black with red"
    assert tirg_different_word("black leather jacket", "black leather coat") == (
        "jacket", "coat", "replace jacket with coat")
    # Different lengths: TIRG's rule (first word absent from the other caption; the last word when none is).
    assert fashion200k_modification("leather jacket", "black leather jacket") == "replace jacket with black"
    # A repeated word: the differing position decides, where TIRG's rule would not find the source word.
    assert fashion200k_modification("red and red dress", "red and blue dress") == "replace red with blue"


GALLERY_CAPTIONS = ["black maxi dress", "red maxi dress", "blue maxi dress", "Red  Maxi Dress",
                    "black leather jacket", "brown leather jacket", "black leather coat"]
ALL_PAIRS = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (3, 0), (3, 2), (4, 5), (4, 6), (5, 4), (6, 4)]


def test_fashion200k_generate_queries():
    queries = fashion200k_generate_queries(GALLERY_CAPTIONS + ["leather jacket", ""])
    assert [(query["source"], query["target"]) for query in queries] == ALL_PAIRS
    assert queries[0]["modification"] == "replace black with red"
    assert queries[0]["target_caption"] == "red maxi dress"
    assert queries[9]["modification"] == "replace jacket with coat"
    assert queries[6]["source_caption"] == "red maxi dress"  # image 3's caption, normalised
    sampled = fashion200k_generate_queries(GALLERY_CAPTIONS, max_queries=5, seed=3)
    assert sampled == fashion200k_generate_queries(GALLERY_CAPTIONS, max_queries=5, seed=3)
    assert len(sampled) == 5 and all(query in queries for query in sampled)
    assert [queries.index(query) for query in sampled] == sorted(queries.index(query) for query in sampled)
    assert fashion200k_generate_queries(GALLERY_CAPTIONS, max_queries=50) == queries
    with pytest.raises(ValueError, match="max_queries"):
        fashion200k_generate_queries(GALLERY_CAPTIONS, max_queries=0)


@pytest.fixture
def fashion200k_data(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "dress_test_detect_all.txt").write_text(
        "women/dresses/1/1_0.jpeg\t0.9\tblack maxi dress\n"
        "women/dresses/2/2_0.jpeg\t0.8\tred maxi dress\n"
        "women/dresses/3/3_0.jpeg\t0.7\tblue maxi dress \n"
        "a line without tabs\n"
        "women/dresses/4/4_0.jpeg\tnot-a-number\tgreen dress\n"
        "\n"
        "women/dresses/5/5_0.jpeg\t0.6\tRed  Maxi Dress\n"
    )
    (labels / "jacket_test_detect_all.txt").write_text(
        "women/jackets/6/6_0.jpeg\t0.5\tblack leather jacket\n"
        "women/jackets/7/7_0.jpeg\t0.5\tbrown leather jacket\n"
        "women/jackets/8/8_0.jpeg\t0.5\tblack leather coat\n"
        "women/jackets/9/9_0.jpeg\t0.5\tleather jacket\n"
        "women/dresses/1/1_0.jpeg\t0.9\tblack maxi dress\n"  # listed twice: kept once
    )
    (labels / "dress_train_detect_all.txt").write_text("women/dresses/10/10_0.jpeg\t0.9\twhite maxi dress\n")
    images = tmp_path / "images"
    paths = ["women/dresses/1/1_0.jpeg", "women/dresses/2/2_0.jpeg", "women/dresses/3/3_0.jpeg",
             "women/dresses/5/5_0.jpeg", "women/jackets/6/6_0.jpeg", "women/jackets/7/7_0.jpeg",
             "women/jackets/8/8_0.jpeg"]  # women/jackets/9 is missing
    for index, path in enumerate(paths):
        _write_index_image(images / path, index)
    return labels, images


def test_load_fashion200k_labels(fashion200k_data, tmp_path):
    labels, _ = fashion200k_data
    rows, malformed = load_fashion200k_labels_with_report(labels)
    assert len(rows) == 9  # 5 + 5 lines minus 2 malformed; blank line ignored; train file not read
    assert rows[0] == {"path": "women/dresses/1/1_0.jpeg", "score": 0.9, "caption": "black maxi dress"}
    assert rows[2]["caption"] == "blue maxi dress"
    assert [(bad["file"], bad["line"]) for bad in malformed] == [
        ("dress_test_detect_all.txt", 4), ("dress_test_detect_all.txt", 5)]
    assert "3 tab-separated" in malformed[0]["error"] and "not a number" in malformed[1]["error"]
    assert load_fashion200k_labels(labels) == rows
    assert [row["caption"] for row in load_fashion200k_labels(labels, split="train")] == ["white maxi dress"]
    with pytest.raises(Fashion200kError, match="does not exist"):
        load_fashion200k_labels(tmp_path / "nowhere")
    with pytest.raises(Fashion200kError, match="_val_detect_all"):
        load_fashion200k_labels(labels, split="val")
    with pytest.raises(ValueError, match="split"):
        load_fashion200k_labels(labels, split="../x")


def test_evaluate_fashion200k_generated_queries(fashion200k_data):
    labels, images = fashion200k_data
    # One-hot embeddings and an image-only compose: every score between different images is 0, so each ranking
    # is the gallery in position order minus the source. Target ranks per query of ALL_PAIRS:
    #   (0,1) 1  (0,2) 2  (1,0) 1  (1,2) 2  (2,0) 1  (2,1) 2  (3,0) 1  (3,2) 3  (4,5) 5  (4,6) 6  (5,4) 5  (6,4) 5
    texts = []

    def compose(reference_embeds, batch_texts):
        texts.extend(batch_texts)
        return reference_embeds

    result = evaluate_fashion200k(labels, images, _table_encoder(np.eye(256, 8)), compose, ks=(1, 2, 3, 5, 6))
    assert result["num_queries"] == 12 and result["query_source"] == "generated"
    assert result["r@1"] == pytest.approx(4 / 12) and result["r@2"] == pytest.approx(7 / 12)
    assert result["r@3"] == pytest.approx(8 / 12) and result["r@5"] == pytest.approx(11 / 12)
    assert result["r@6"] == 1.0
    assert texts[0] == "replace black with red" and texts[9] == "replace jacket with coat"
    assert (result["gallery_size"], result["gallery_missing_images"], result["malformed_label_lines"],
            result["duplicate_paths"]) == (7, 1, 2, 1)
    sampled = evaluate_fashion200k(labels, images, _table_encoder(np.eye(256, 8)), lambda r, t: r,
                                   max_queries=3, seed=1)
    assert sampled["num_queries"] == 3 and set(sampled) >= {"r@1", "r@10", "r@50"}


def test_evaluate_fashion200k_query_file(fashion200k_data, tmp_path):
    labels, images = fashion200k_data
    queries = tmp_path / "test_queries.txt"
    queries.write_text(
        "women/dresses/1/1_0.jpeg women/dresses/2/2_0.jpeg\n"  # source p0, target "red maxi dress": rank 1
        "women/jackets/6/6_0.jpeg women/jackets/8/8_0.jpeg\n"  # source p4, target "black leather coat" (p6): rank 6
        "women/jackets/9/9_0.jpeg women/jackets/6/6_0.jpeg\n"  # source image missing
        "women/dresses/1/1_0.jpeg women/jackets/9/9_0.jpeg\n"  # target caption only on the missing image
        "women/dresses/1/1_0.jpeg women/dresses/4/4_0.jpeg\n"  # target on a malformed label line
        "one-field-only\n"
    )
    texts = []

    def compose(reference_embeds, batch_texts):
        texts.extend(batch_texts)
        return reference_embeds

    result = evaluate_fashion200k(labels, images, _table_encoder(np.eye(256, 8)), compose, test_queries=queries,
                                  ks=(1, 5, 6))
    assert (result["r@1"], result["r@5"], result["r@6"], result["num_queries"]) == (0.5, 0.5, 1.0, 2)
    assert texts == ["replace black with red", "replace jacket with coat"]
    assert result["query_source"] == "file"
    assert (result["skipped_queries_missing_source"], result["skipped_queries_missing_target"],
            result["malformed_query_lines"]) == (1, 2, 1)
    with pytest.raises(Fashion200kError, match="query file"):
        evaluate_fashion200k(labels, images, _table_encoder(np.eye(256, 8)), compose,
                             test_queries=tmp_path / "none.txt")
    with pytest.raises(Fashion200kError, match="None of"):
        evaluate_fashion200k(labels, tmp_path / "labels", _table_encoder(np.eye(256, 8)), compose)


# --------------------------------------------------------------------------------------------------------------
# KAGL-style text -> image
# --------------------------------------------------------------------------------------------------------------


def test_kagl_text_to_image_hand_checked():
    # Images: i0 [1, 0], i1 [0, 1], i2 [1, 1]/sqrt2, i3 [-1, 0]. Titles: i0 and i2 share "red shirt".
    images = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    titles = ["Red Shirt", "blue jeans", " red  shirt", "Black Watch"]
    # t0 = t1 = t2 = [1, 0]: ranking 0, 2, 1, 3.  t3 = [0, 1]: scores 0, 1, .71, 0 -> ranking 1, 2, 0, 3 (tie).
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    result = kagl_text_to_image(texts, images, titles, ks=(1, 2))
    # Single target ranks 1, 3, 2, 4; any-same-title ranks 1, 3, 1 (i0 shares t2's title), 4.
    assert result["single_target"] == {"r@1": 0.25, "r@2": 0.5, "mrr": pytest.approx(25 / 48)}
    assert result["any_same_title"] == {"r@1": 0.5, "r@2": 0.5, "mrr": pytest.approx(31 / 48)}
    assert result["num_queries"] == 4 and result["num_distinct_titles"] == 3
    default = kagl_text_to_image(texts, images, titles)
    assert set(default["single_target"]) == {"r@1", "r@10", "mrr"} and default["single_target"]["r@10"] == 1.0
    # An empty title matches only its own item.
    empty = kagl_text_to_image(texts, images, ["", "", "", None], ks=(1,))
    assert empty["any_same_title"] == empty["single_target"] and empty["num_distinct_titles"] == 0


def test_kagl_text_to_image_validation():
    images = np.eye(3)
    with pytest.raises(ValueError, match="one row per item"):
        kagl_text_to_image(np.eye(2, 3), images, ["a", "b"])
    with pytest.raises(ValueError, match="titles"):
        kagl_text_to_image(images, images, ["a", "b"])
    with pytest.raises(ValueError, match="dim"):
        kagl_text_to_image(np.eye(3, 2), images, ["a", "b", "c"])
    with pytest.raises(ValueError, match="infinite"):
        kagl_text_to_image(np.full((3, 3), np.inf), images, ["a", "b", "c"])
