"""Tests for the catalog data layer (`modeling.data.catalog`)."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from modeling.data import images as data_images
from modeling.data.catalog import ATTRIBUTES, load_catalog, load_catalog_with_report
from modeling.data.sources import CatalogError
from modeling.data.images import ImageError, load_image
from modeling.data.text import attribute_caption, item_text, normalise_title


CATALOG_DIR = Path(os.environ.get("FASHION_CATALOG", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
needs_catalog = pytest.mark.skipif(
    not (CATALOG_DIR / "metadata.csv").is_file(),
    reason=f"real catalog not found at {CATALOG_DIR} (set FASHION_CATALOG to its folder)",
)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _rgba_png() -> bytes:
    """A 4x4 PNG, opaque red on the left half and fully transparent (black) on the right half."""
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[:, :2] = (255, 0, 0, 255)
    return _encode(Image.fromarray(pixels, "RGBA"), "PNG")


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixels: cheap to write, as a decompression bomb would be."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# Good rows: an RGB and a greyscale JPEG, an RGBA and a palette PNG. Bad rows: corrupt bytes, a path to a missing
# file, and no path at all.
IMAGES = {
    "imgs/a.jpg": _encode(Image.new("RGB", (6, 8), (10, 20, 200)), "JPEG"),
    "imgs/b.jpg": _encode(Image.new("L", (6, 8), 128), "JPEG"),
    "imgs/c.png": _rgba_png(),
    "imgs/d.png": _encode(Image.new("P", (6, 8), 3), "PNG"),
    "imgs/bad.jpg": os.urandom(64),
}
ROWS = [
    # sku, picture, productDisplayName, Colour, category, gender, fold, year, notes
    ("001", "imgs/a.jpg", "  Blue  Shirt ", "Blue", "Shirts", "Men", "train", "2011", "x"),
    ("002", "imgs/b.jpg", "", "Grey", "Tshirts", "Women", "train", "2012", ""),
    ("003", "imgs/c.png", "Red Top", "Red", "Tops", "Women", "val", "", ""),
    ("004", "imgs/d.png", "Black Shoes", "", "Casual Shoes", "Men", "test", "2013", ""),
    ("005", "imgs/bad.jpg", "Broken", "Blue", "Shirts", "Men", "test", "2011", ""),
    ("006", "imgs/missing.jpg", "Missing", "Blue", "Shirts", "Men", "val", "2011", ""),
    ("007", "", "No path", "Blue", "Shirts", "Men", "train", "2011", ""),
]
COLUMNS = ["sku", "picture", "productDisplayName", "Colour", "category", "gender", "fold", "year", "notes"]
COLUMN_MAP = {"picture": "image", "fold": "split"}


@pytest.fixture()
def tmp_catalog(tmp_path: Path) -> Path:
    for name, payload in IMAGES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(payload)
    pd.DataFrame(ROWS, columns=COLUMNS).to_csv(tmp_path / "metadata.csv", index=False)
    return tmp_path


def test_folder_catalog(tmp_catalog: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modeling.data.catalog"):
        ds, skipped = load_catalog_with_report(tmp_catalog, column_map=COLUMN_MAP)

    assert ds.column_names == [
        "id", "image", "image_path", "title", "split", "gender", "articleType", "baseColour", "year", "notes"
    ]  # fmt: skip
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds["id"] == ["001", "002", "003", "004"]
    assert ds["title"] == ["Blue  Shirt", "", "Red Top", "Black Shoes"]
    assert ds["split"] == ["train", "train", "val", "test"]
    assert ds["baseColour"] == ["Blue", "Grey", "Red", ""]
    assert ds["articleType"][0] == "Shirts"
    assert ds["year"] == ["2011", "2012", "", "2013"]
    for row in ds:
        assert row["image"].mode == "RGB"
        assert Path(row["image_path"]).is_absolute() and Path(row["image_path"]).is_file()

    errors = {row["id"]: row["error"] for row in skipped}
    assert errors.keys() == {"005", "006", "007"}
    assert "corrupt" in errors["005"] or "not an image" in errors["005"]
    assert "does not exist" in errors["006"]
    assert errors["007"] == "missing image path"
    assert "Skipped 3 catalog rows" in caplog.text and "005" in caplog.text


def test_split_filter_and_max_items(tmp_catalog: Path) -> None:
    assert load_catalog(tmp_catalog, column_map=COLUMN_MAP, split="val,test")["id"] == ["003", "004"]
    assert load_catalog(tmp_catalog, column_map=COLUMN_MAP, split=["test"])["id"] == ["004"]
    assert len(load_catalog(tmp_catalog, column_map=COLUMN_MAP, max_items=2)) == 2
    with pytest.raises(CatalogError, match=r"available splits: \['test', 'train', 'val'\]"):
        load_catalog(tmp_catalog, column_map=COLUMN_MAP, split="dev")


def test_unchecked_images_keep_unreadable_rows(tmp_catalog: Path) -> None:
    ds, skipped = load_catalog_with_report(tmp_catalog, column_map=COLUMN_MAP, check_images=False)
    # Without checking, only the row with no image path at all is dropped.
    assert ds["id"] == ["001", "002", "003", "004", "005", "006"]
    assert [row["id"] for row in skipped] == ["007"]


def test_default_column_map(tmp_catalog: Path) -> None:
    frame = pd.DataFrame(
        {
            "Image_Path": ["imgs/a.jpg"],
            "name": ["Shirt"],
            "articleType": ["Shirts"],
            "category": ["Topwear"],
            "color": ["Blue"],
        }
    )
    frame.to_csv(tmp_catalog / "other.csv", index=False)
    ds = load_catalog(tmp_catalog / "other.csv")
    row = {key: value for key, value in ds[0].items() if key != "image"}
    # No id column: the image file stem stands in; no split information: "train".
    assert row == {
        "id": "a",
        "image_path": str(tmp_catalog / "imgs" / "a.jpg"),
        "title": "Shirt",
        "split": "train",
        "articleType": "Shirts",
        "baseColour": "Blue",
        "category": "Topwear",  # `category` only stands in for a missing `articleType`
    }


def test_no_image_column(tmp_catalog: Path) -> None:
    with pytest.raises(CatalogError, match="no image column.*column_map"):
        load_catalog(tmp_catalog)  # `picture` is not a known image column name


def test_jsonl_keeps_ids_as_text(tmp_catalog: Path) -> None:
    (tmp_catalog / "metadata.csv").unlink()
    pd.DataFrame({"id": [15970.0, np.nan], "image": ["imgs/a.jpg", "imgs/b.jpg"], "year": [2011, 2012]}).to_json(
        tmp_catalog / "metadata.jsonl", orient="records", lines=True
    )
    ds = load_catalog(tmp_catalog)
    # A missing id falls back to the file stem.
    assert ds["id"] == ["15970", "b"]
    assert ds["year"] == ["2011", "2012"]


def _embedded_parquet(path: Path, as_image_feature: bool) -> None:
    images = [IMAGES["imgs/a.jpg"], IMAGES["imgs/c.png"], IMAGES["imgs/bad.jpg"]]
    columns = {"id": ["1", "2", "3"], "title": ["A", "C", "Bad"], "split": ["train", "test", "test"]}
    if as_image_feature:
        columns["image"] = [{"bytes": payload, "path": None} for payload in images]
        features = datasets.Features({**{name: datasets.Value("string") for name in ("id", "title", "split")}})
        features["image"] = datasets.Image()
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    else:
        # A plain Arrow struct, as written by other tools.
        columns["image"] = pa.array(
            [{"bytes": payload, "path": f"{index}.jpg"} for index, payload in enumerate(images)],
            type=pa.struct({"bytes": pa.binary(), "path": pa.string()}),
        )
        pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize("as_image_feature", [True, False], ids=["image-feature", "struct"])
def test_parquet_with_embedded_images(tmp_path: Path, as_image_feature: bool) -> None:
    _embedded_parquet(tmp_path / "catalog.parquet", as_image_feature)
    ds, skipped = load_catalog_with_report(tmp_path / "catalog.parquet")
    assert ds["id"] == ["1", "2"]
    assert ds["image_path"] == ["", ""]
    assert [image.mode for image in ds["image"]] == ["RGB", "RGB"]
    assert [row["id"] for row in skipped] == ["3"]
    assert load_catalog(tmp_path / "catalog.parquet", split="test")["id"] == ["2"]


def test_image_folder_with_classes(tmp_path: Path) -> None:
    for name in ("shirts/x.jpg", "shoes/x.jpg", "shoes/y.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (5, 5), (200, 0, 0)).save(tmp_path / name)
    ds = load_catalog(tmp_path)
    rows = sorted((row["id"], row["title"], row["articleType"], row["split"]) for row in ds.remove_columns("image"))
    # File stems repeat across class folders, so the ids keep the folder name.
    assert rows == [
        ("shirts/x", "shirts", "shirts", "train"),
        ("shoes/x", "shoes", "shoes", "train"),
        ("shoes/y", "shoes", "shoes", "train"),
    ]
    assert all(Path(path).is_file() for path in ds["image_path"])


def test_image_folder_with_split_folders(tmp_path: Path) -> None:
    for name in ("train/shirts/a.jpg", "train/shoes/b.jpg", "test/shirts/c.jpg", "test/shoes/d.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (5, 5)).save(tmp_path / name)
    assert sorted(load_catalog(tmp_path)["split"]) == ["test", "test", "train", "train"]
    ds = load_catalog(tmp_path, split="test")
    assert sorted(zip(ds["id"], ds["articleType"])) == [("c", "shirts"), ("d", "shoes")]


def test_flat_image_folder(tmp_path: Path) -> None:
    for name in ("p1.jpg", "p2.png"):
        Image.new("L", (5, 5)).save(tmp_path / name)
    ds = load_catalog(tmp_path)
    assert sorted(ds["id"]) == ["p1", "p2"]
    assert ds["title"] == ["", ""]
    assert {image.mode for image in ds["image"]} == {"RGB"}


def test_unusable_sources(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nowhere")
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(str(tmp_path / "catalog.csv"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CatalogError, match="Unsupported catalog file"):
        load_catalog(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="no metadata file"):
        load_catalog(tmp_path / "empty")


def test_unknown_hub_id() -> None:
    # Offline the Hub is unreachable; online the dataset does not exist. Both read the same.
    with pytest.raises(CatalogError, match="Hugging Face Hub"):
        load_catalog("fashion-search-tests/no-such-dataset-0b9c")


@pytest.mark.hub
@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"), reason="HF_HUB_OFFLINE is set")
def test_hub_dataset() -> None:
    ds = load_catalog("huggingface/cats-image")
    assert len(ds) >= 1 and ds[0]["image"].mode == "RGB"
    assert ds[0]["split"] == "test"  # from the split name: the data has no split column


@needs_catalog
def test_real_catalog_test_split() -> None:
    ds = load_catalog(CATALOG_DIR, split="test")
    assert len(ds) == 1404
    assert set(ds["split"]) == {"test"}
    assert set(ATTRIBUTES) <= set(ds.column_names)
    assert all(item_id.isdigit() for item_id in ds["id"])
    assert {image.mode for image in ds.select(range(0, len(ds), 7))["image"]} == {"RGB"}
    # The documented caption rule reproduces the catalogue's derived column.
    rows = ds.select_columns(["attr_caption", *ATTRIBUTES])
    assert all(row["attr_caption"] == attribute_caption(row) for row in rows)


@needs_catalog
def test_real_catalog_full() -> None:
    ds, skipped = load_catalog_with_report(CATALOG_DIR)
    assert len(ds) == 14999 and skipped == []
    assert ds.column_names[:12] == ["id", "image", "image_path", "title", "split", *ATTRIBUTES]
    assert sorted(set(ds["split"])) == ["test", "train", "val"]
    assert len({v for v in ds["masterCategory"] if v}) == 7


# --------------------------------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------------------------------


def test_load_image_modes(tmp_path: Path) -> None:
    grey = load_image(Image.new("L", (3, 3), 100))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (100, 100, 100)

    rgba = load_image(_rgba_png())
    assert rgba.mode == "RGB"
    assert rgba.getpixel((0, 0)) == (255, 0, 0) and rgba.getpixel((3, 0)) == (255, 255, 255)

    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 200, 0] * 256)
    palette.info["transparency"] = 1
    palette.putpixel((1, 1), 1)
    converted = load_image(palette)
    assert converted.getpixel((0, 0)) == (0, 200, 0) and converted.getpixel((1, 1)) == (255, 255, 255)

    assert load_image(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)

    # 16-bit values are scaled, not clipped to white.
    deep = load_image(Image.fromarray(np.full((2, 2), 32896, np.uint16)))
    assert deep.getpixel((0, 0)) == (128, 128, 128)

    assert load_image(np.full((2, 2, 3), 0.5, np.float32)).getpixel((0, 0)) == (127, 127, 127)
    assert load_image(np.zeros((2, 2), np.uint8)).mode == "RGB"

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (4, 4), (0, 0, 255)).save(path)
    assert load_image(path).size == load_image(str(path)).size == load_image(path.read_bytes()).size == (4, 4)
    assert load_image({"bytes": None, "path": str(path)}).mode == "RGB"


def test_load_image_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="corrupt|not an image"):
        load_image(os.urandom(100))
    with pytest.raises(ImageError, match="corrupt"):
        load_image(IMAGES["imgs/a.jpg"][:200])  # truncated JPEG
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text)
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="not an image"):
        load_image(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(TypeError):
        load_image(42)


@pytest.mark.parametrize("megapixels", [60, 200], ids=["over-our-limit", "pillow-bomb"])
def test_load_image_rejects_huge_images(megapixels: int) -> None:
    with pytest.raises(ImageError, match="megapixels|too large"):
        load_image(_png_header(10_000, megapixels * 100))


def test_pixel_limit_applies_to_catalog_images(tmp_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_images, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(ImageError, match="megapixels"):
        load_image(Image.new("RGB", (4, 4)))
    with pytest.raises(CatalogError, match="no usable rows"):
        load_catalog(tmp_catalog, column_map=COLUMN_MAP)


# --------------------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------------------


def test_text_helpers() -> None:
    row = {
        "title": "Turtle Check Men Navy Blue Shirt",
        "gender": "Men",
        "articleType": "Shirts",
        "baseColour": "Navy Blue",
        "usage": "Casual",
    }
    assert normalise_title("  Turtle  Check\tMEN ") == "turtle check men"
    assert attribute_caption(row) == "navy blue shirts for men, casual"
    assert attribute_caption({**row, "baseColour": "", "usage": None}) == "shirts for men"
    assert item_text(row) == row["title"]
    assert item_text({**row, "title": ""}) == "navy blue shirts for men, casual"
    assert item_text({**row, "attr_caption": "given caption"}, "caption") == "given caption"
    assert item_text(row, "both") == "Turtle Check Men Navy Blue Shirt. navy blue shirts for men, casual"
    with pytest.raises(ValueError, match="mode"):
        item_text(row, "summary")
