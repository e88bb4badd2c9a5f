"""Products in the world: the studio background, isolating the product in a photo, the training views and the photo
benchmark's renders (modeling.data.photos, modeling.training.augment, modeling.evaluation.photos)."""

import numpy as np
import pytest
import torch
from PIL import Image

from modeling.data.photos import (Isolation, clamp_box, is_studio_shot, isolate_product, near_white,
                                  studio_background_mask)


def studio_photo(h=80, w=60, colour=(200, 30, 40), white_print=True) -> np.ndarray:
    """A red 'shirt' on a white studio background, with a white print inside it."""
    a = np.full((h, w, 3), 252, np.uint8)
    a[15:70, 12:48] = colour
    if white_print:
        a[35:45, 25:35] = 250
    return a


def textured(h, w, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 160, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    return np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]


def test_studio_background_is_the_white_touching_the_border():
    a = studio_photo()
    mask = studio_background_mask(a)
    assert mask[0, 0] and mask[-1, -1] and mask[5, 30]
    assert not mask[20:65, 14:46].any()  # the product, its white print included (not connected to the border)
    assert near_white(a)[40, 30] and not mask[40, 30]


def test_studio_shot_detection():
    assert is_studio_shot(studio_photo())
    photo = textured(240, 180)
    photo[40:200, 40:140] = studio_photo(160, 100)[..., :]
    assert not is_studio_shot(photo)


def test_isolate_skips_studio_shots_and_cuts_out_products_on_backgrounds():
    studio = Image.fromarray(studio_photo())
    kept = isolate_product(studio)
    assert isinstance(kept, Isolation) and not kept.applied and kept.image is studio
    # A red product on a grey-brown checked background: the cut-out is the product on white, re-centred.
    photo = textured(240, 200, seed=1)
    photo[60:200, 50:150] = (210, 20, 30)
    out = isolate_product(Image.fromarray(photo))
    assert out.applied
    arr = np.asarray(out.image).astype(int)
    red = (arr[..., 0] > 150) & (arr[..., 1] < 80)
    assert red.mean() > 0.6  # mostly product: the background is gone
    assert near_white(np.asarray(out.image)).mean() + red.mean() > 0.9
    assert abs(arr.shape[0] / arr.shape[1] - 140 / 100) < 0.25  # cropped to the product's own shape


def test_isolate_with_a_user_box_and_bad_boxes():
    photo = textured(200, 200, seed=2)
    photo[20:80, 120:180] = (20, 40, 200)  # a blue product in the top-right corner, off centre
    out = isolate_product(Image.fromarray(photo), box=(110, 10, 190, 90))
    arr = np.asarray(out.image).astype(int)
    assert out.applied and out.box == (110, 10, 190, 90)
    assert ((arr[..., 2] > 150) & (arr[..., 0] < 80)).mean() > 0.6
    assert clamp_box((190, 90, 110, 10), 200, 200) == (110, 10, 190, 90)  # corners in any order
    with pytest.raises(ValueError, match="does not cover the photo"):
        clamp_box((300, 300, 400, 400), 200, 200)


def test_kept_box_against_a_brute_force_reference():
    from modeling.data.photos import kept_box

    rng = np.random.default_rng(3)
    for _ in range(20):
        keep = rng.random((30, 40)) < 0.02
        keep[rng.integers(30), rng.integers(40)] = True
        ys, xs = np.nonzero(keep)
        assert kept_box(keep) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    keep = np.zeros((100, 100), bool)
    keep[40:60, 10:30] = True
    assert kept_box(keep, pad=0.5) == (0, 30, 40, 70)  # padded by half its size, clipped at the border


def test_refining_starts_a_second_cut_from_the_first_products_box():
    """A product off the centre, cut by the centred box: the first cut's box is where the product was found; the
    second pass, from that box widened, keeps the product and its box; nothing found, nothing refined."""
    from modeling.data.photos import refine_isolation

    photo = textured(240, 200, seed=4)
    photo[30:200, 20:120] = (210, 20, 30)
    image = Image.fromarray(photo)
    first = isolate_product(image)
    assert first.found is not None
    left, top, right, bottom = first.found
    assert 10 <= left <= 30 and 20 <= top <= 40 and 110 <= right <= 130 and 190 <= bottom <= 210
    second = refine_isolation(image, first, margin=0.1)
    dx, dy = (right - left) * 0.1, (bottom - top) * 0.1
    assert second.box == clamp_box((left - dx, top - dy, right + dx, bottom + dy), 200, 240)
    arr = np.asarray(second.image).astype(int)
    assert ((arr[..., 0] > 150) & (arr[..., 1] < 80)).mean() > 0.6
    studio = isolate_product(Image.fromarray(studio_photo()))
    assert studio.found is None and refine_isolation(Image.fromarray(studio_photo()), studio) is studio


def test_world_view_replaces_the_background_and_keeps_the_product():
    from modeling.training.augment import background_masks, random_backgrounds, world_augment, world_view
    from modeling.models import DualEncoderImageProcessor

    images = torch.from_numpy(np.stack([studio_photo(), studio_photo(colour=(30, 160, 60))]))
    masks = background_masks(images)
    assert masks.shape == (2, 80, 60) and masks[:, 0, 0].all() and not masks[:, 40, 20].any()
    pool = images.permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    backgrounds = random_backgrounds(64, 80, 60, pool)
    assert backgrounds.shape == (64, 3, 80, 60) and 0 <= backgrounds.min() and backgrounds.max() <= 1
    assert backgrounds.std(dim=(1, 2, 3)).max() > 0.05  # not all flat
    views = world_view(images.repeat(16, 1, 1, 1), masks.repeat(16, 1, 1), pool)
    assert views.shape == (32, 3, 80, 60) and torch.isfinite(views).all()
    corners = views[:, :, :4, :4].mean(dim=(2, 3))
    assert (corners.min(dim=1).values < 0.85).float().mean() > 0.5  # most corners are no longer studio white
    processor = DualEncoderImageProcessor(image_size=[80, 60])
    out = world_augment(images, masks, processor, prob=1.0)
    assert out.shape == (2, 3, 80, 60)


@pytest.mark.parametrize("condition", ["clean", "zoom", "light", "plain", "photo", "phone"])
def test_benchmark_renders_each_condition_with_the_product_box(condition):
    from modeling.evaluation.photo_render import background_photos, remedy_image, render

    product = Image.fromarray(studio_photo())
    photos = background_photos("val")
    image, box = render(product, condition, np.random.default_rng(0), photos)
    assert image.mode == "RGB" and min(image.size) >= 40
    left, top, right, bottom = box
    assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height
    if condition in ("plain", "photo", "phone"):
        assert not is_studio_shot(np.asarray(image))
    if condition == "clean":
        assert np.array_equal(np.asarray(image), studio_photo())
    # The product's true mask: the same photo and box (the same random draws), the mask inside the box, and the
    # "oracle" remedy puts exactly the masked pixels on white.
    again, same_box, mask = render(product, condition, np.random.default_rng(0), photos, with_mask=True)
    assert np.array_equal(np.asarray(again), np.asarray(image)) and same_box == box
    assert mask.shape == (image.height, image.width) and mask.dtype == np.uint8
    keep = mask >= 128
    assert keep.any() and not keep[:, :max(0, left - 2)].any() and not keep[bottom + 2:].any()
    if condition != "phone":  # the phone's rotation moves the product out of its box's frame a little
        red = (np.asarray(image)[..., 0] > 150) & (np.asarray(image)[..., 1] < 90)
        assert (keep & red).sum() >= 0.9 * red[top:bottom, left:right].sum()
    oracle = np.asarray(remedy_image(image, box, "oracle", np.random.default_rng(1), mask))
    assert oracle.shape[0] < image.height or condition in ("clean", "zoom", "light")
    assert (oracle[0] == 255).all() and (oracle[:, 0] == 255).all()
    with pytest.raises(ValueError, match="true mask"):
        remedy_image(image, box, "oracle", np.random.default_rng(1))


def test_benchmark_background_sets_are_disjoint_and_load():
    """No photograph in two sets, the held-out sets ("fresh", "fresh2") from other packages than scikit-image (the
    first dev sets' source), every file readable as a colour or greyscale photograph."""
    from modeling.evaluation.photo_render import BACKGROUNDS, background_file, background_photos, background_sets

    files = {s: {background_file(n).resolve() for n in names} for s, names in BACKGROUNDS.items()}
    for a in files:
        for b in files:
            assert a == b or not files[a] & files[b]
    for held_out in ("fresh", "fresh2"):
        assert all(":" in n and not n.startswith("skimage:") for n in BACKGROUNDS[held_out])
        photos = background_photos(held_out)
        assert len(photos) == len(BACKGROUNDS[held_out]) and all(p.ndim in (2, 3) and min(p.shape[:2]) > 200
                                                                   for p in photos)
    assert background_sets(None, "test") == ["test"] and background_sets("val,test", "val") == ["val", "test"]
    with pytest.raises(ValueError, match="unknown background set"):
        background_sets("holiday", "val")


@pytest.mark.slow
def test_photo_benchmark_end_to_end_on_a_tiny_model(tiny_model_dir, catalog_dir, tmp_path):
    """`python -m modeling.evaluation.photos` on 300 catalog items: every (condition, remedy) row, P@10 within its
    ideal, and the report files (JSON, markdown table, picture)."""
    import json

    from modeling.evaluation.photos import main

    report = main(["--model", str(tiny_model_dir), "--catalog", str(catalog_dir), "--max-items", "300",
                   "--split", "val", "--queries", "6", "--output", str(tmp_path)])
    keys = {(r["condition"], r["remedy"]) for r in report["rows"]}
    assert ("clean", "none") in keys and ("phone", "isolate") in keys and ("photo", "box") in keys
    assert ("clean", "isolate") not in keys  # a studio shot is searched as it is
    for row in report["rows"]:
        assert 0 <= row["p@10_type_colour"] <= row["p@10"] <= 1 and row["p@10"] <= row["ideal"] + 1e-9
        assert 0 <= row["ndcg@10"] <= 1
    assert json.loads((tmp_path / "photos.json").read_text())["queries"] == 6
    assert "| model | remedy | clean |" in (tmp_path / "photos.md").read_text()
    with Image.open(tmp_path / "photos.png") as sheet:
        assert sheet.width >= 6 * 100


def test_precision_rows_against_a_brute_force_reference():
    from modeling.evaluation.photos import precision_rows

    rng = np.random.default_rng(0)
    types = rng.integers(0, 3, size=40)
    colours = rng.integers(0, 2, size=40)
    queries = np.array([0, 5, 9])
    scores = rng.normal(size=(3, 40))
    out = precision_rows(scores, queries, types, colours)
    p, pc = [], []
    for row, q in zip(scores, queries):
        order = [i for i in np.argsort(-row, kind="stable") if i != q][:10]
        p.append(np.mean([types[i] == types[q] for i in order]))
        pc.append(np.mean([types[i] == types[q] and colours[i] == colours[q] for i in order]))
    assert out["p@10"] == pytest.approx(np.mean(p)) and out["p@10_type_colour"] == pytest.approx(np.mean(pc))


@pytest.mark.slow
def test_photo_settings_sweep_on_a_tiny_model(tiny_model_dir, tiny_vae_dir, catalog_dir, tmp_path):
    """benchmarks/photo_settings.py: one row per setting x condition x remedy, precisions in [0, 1], type+colour
    below type, and at fusion 0 the engine's plain answer (the same photos ranked twice give the same row)."""
    import json

    module = load_benchmark("photo_settings")
    out = tmp_path / "grid.json"
    rows = module.main(["--model", str(tiny_model_dir), "--index", str(tmp_path / "index"), "--catalog",
                        str(catalog_dir), "--max-items", "300", "--queries", "4", "--photo-model", str(tiny_vae_dir),
                        "--conditions", "clean,phone", "--remedies", "none,box", "--fusion", "0,0.5",
                        "--type-vote", "0", "--type-weight", "0.3,0.3", "--output", str(out)])
    assert len(rows) == 2 * 2 * 3 and json.loads(out.read_text()) == rows
    for row in rows:
        assert 0 <= row["p@10_type_colour"] <= row["p@10"] <= 1
    first, repeat = rows[:3], rows[3:6]  # type weight 0.3 twice at fusion 0
    assert [r["p@10"] for r in first] == [r["p@10"] for r in repeat]


def corner_product(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(photo, the product's true pixels): a red product in the top-left corner of a checked background."""
    photo = textured(240, 200, seed=seed)
    truth = np.zeros((240, 200), bool)
    truth[8:120, 6:90] = True
    photo[truth] = (210, 20, 30)
    return photo, truth


def mask_iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_a_product_off_the_centre_is_found_by_a_window_cut_out():
    """A product in the photo's corner (GrabCut from the centred box mostly keeps nearly all of the box: nothing
    cut out, the box searched): among the window cut-outs is the product, and the one the others agree with most
    is it."""
    from modeling.data.photos import cutout_candidates, kept_box, mask_consensus, query_photo

    for seed in (0, 3):
        photo, truth = corner_product(seed)
        image = Image.fromarray(photo)
        first = query_photo(image, refine=True)
        assert first.applied
        candidates = cutout_candidates(image, first)
        assert len(candidates) >= 2 and all(c.found is not None for c in candidates)
        assert max(mask_iou(c.mask, truth) for c in candidates) > 0.95
        chosen = candidates[int(np.argmax(mask_consensus([c.mask for c in candidates])))]
        assert mask_iou(chosen.mask, truth) > 0.9
        assert kept_box(chosen.mask) == chosen.found


def test_a_studio_shot_or_a_photo_searched_as_uploaded_has_no_other_cut_out():
    from modeling.data.photos import cutout_candidates, query_photo

    studio = Image.fromarray(studio_photo())
    first = query_photo(studio, refine=True)
    assert cutout_candidates(studio, first) == [first]
    photo = Image.fromarray(corner_product()[0])
    as_uploaded = query_photo(photo, isolate=False)
    assert cutout_candidates(photo, as_uploaded) == [as_uploaded]


def test_window_boxes_tile_the_photo_in_a_three_by_three_grid():
    from modeling.data.photos import window_boxes

    boxes = np.array(window_boxes(200, 300, side=0.8))
    assert boxes.shape == (9, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 200).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 3] <= 300).all()
    assert np.allclose(boxes[:, 2] - boxes[:, 0], 0.76 * 200) and np.allclose(boxes[:, 3] - boxes[:, 1], 0.76 * 300)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert sorted(set(np.round(centres[:, 0], 6))) == pytest.approx([80, 100, 120])
    assert sorted(set(np.round(centres[:, 1], 6))) == pytest.approx([120, 150, 180])


def test_mask_consensus_against_a_brute_force_reference():
    from modeling.data.photos import mask_consensus

    rng = np.random.default_rng(5)
    for n, shape in ((2, (30, 40)), (5, (30, 40)), (4, (400, 300))):
        masks = [rng.random(shape) < rng.uniform(0.1, 0.6) for _ in range(n)]
        if n == 5:
            masks[0][:] = False  # an empty mask: IoU 0 with the others
        step = max(1, max(shape) // 160)
        read = [m[::step, ::step] for m in masks]
        expected = []
        for i, a in enumerate(read):
            ious = [(a & b).sum() / (a | b).sum() if (a | b).any() else 1.0 for j, b in enumerate(read) if j != i]
            expected.append(np.mean(ious))
        assert mask_consensus(masks) == pytest.approx(expected, abs=1e-6)
    assert mask_consensus([masks[0]]).tolist() == [1.0]


def load_benchmark(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cutout_benchmark_refuses_the_held_out_sets():
    main = load_benchmark("cutout_iou").main
    for argv in (["--backgrounds", "fresh2"], ["--backgrounds", "val,fresh"], ["--split", "test"]):
        with pytest.raises(SystemExit, match="dev only"):
            main(argv)


@pytest.mark.slow
def test_cutout_benchmark_on_a_tiny_model(tiny_model_dir, tiny_vae_dir, catalog_dir, tmp_path):
    """benchmarks/cutout_iou.py: both variants measured on every photo, IoU summaries within [0, 1]."""
    import json

    out = tmp_path / "iou.json"
    report = load_benchmark("cutout_iou").main([
        "--model", str(tiny_model_dir), "--index", str(tmp_path / "index"), "--catalog", str(catalog_dir),
        "--max-items", "300", "--queries", "3", "--photo-model", str(tiny_vae_dir), "--conditions", "photo,phone",
        "--output", str(out)])
    assert set(report) == {"default", "chosen"} and json.loads(out.read_text())["report"] == report
    for row in report.values():
        assert row["photos"] == 6 and 0 <= row["below_0.5"] <= 1
        assert 0 <= row["mean"] <= 1 and 0 <= row["median"] <= 1 and row["seconds_per_photo"] > 0


def test_tiny_photos_give_cut_outs_or_the_photo_never_an_error():
    """Photos of a few pixels (a flat colour and one odd pixel): a cut-out may keep a pixel whose widened box is still
    too small to cut again; that cut is left out (the photo searched as the other cut-outs or as uploaded), never an
    error."""
    from modeling.data.photos import cutout_candidates, query_photo

    for seed in range(120):
        rng = np.random.default_rng(seed)
        h, w = rng.integers(6, 14, 2)
        pixels = np.full((h, w, 3), rng.integers(0, 200, 3), np.uint8) + rng.integers(0, 6, (h, w, 3)).astype(np.uint8)
        pixels[rng.integers(1, h - 1), rng.integers(1, w - 1)] = rng.integers(0, 255, 3)
        image = Image.fromarray(pixels)
        for refine in (True, False):
            first = query_photo(image, refine=refine)
            candidates = cutout_candidates(image, first, refine=refine)
            assert candidates and all(c.image is not None for c in candidates)
