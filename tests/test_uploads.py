"""Uploaded photos with bounded memory (`modeling.data.uploads`): photo formats only, sizes refused from the header,
JPEGs decoded at reduced scale, the reduction strip by strip equal to the whole image's, boxes in the upload's
pixels."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from modeling.data import uploads
from modeling.data.images import ImageError, load_image
from modeling.data.uploads import MAX_UPLOAD_PIXELS, load_upload, reduced_rgb
from tests.test_images import png_bomb


def _encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX", "EPS"])
def test_only_photo_formats_are_opened(fmt):
    data = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n" if fmt == "EPS"
            else _encoded(Image.new("RGB", (16, 16), "red"), fmt))
    with pytest.raises(ImageError, match="The image data is not an image file this app takes"):
        load_upload(data)


@pytest.mark.parametrize(("mode", "side"), [("P", 7000), ("I;16", 6000), ("RGBA", 4001)])
def test_images_over_the_limit_are_refused_from_the_header(tmp_path, monkeypatch, mode, side):
    """The issue's 7000x7000 palette PNG and 6000x6000 16-bit image: refused before a pixel is decoded."""
    bomb = png_bomb(tmp_path / "bomb.png", mode, side)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, *a, **k: decoded.append(self.size))
    with pytest.raises(ImageError, match=f"limit of {MAX_UPLOAD_PIXELS // 1_000_000} megapixels"):
        load_upload(str(bomb))
    assert decoded == []


def test_jpegs_count_what_their_decoder_makes_at_reduced_scale(monkeypatch):
    monkeypatch.setattr(uploads, "MAX_UPLOAD_PIXELS", 1_000_000)
    photo = Image.fromarray(_noise(1500, 2000))
    upload = load_upload(_encoded(photo, "JPEG", quality=90), max_side=600)  # 3 MP, decoded at 1/2: 0.75 MP
    assert upload.size == (2000, 1500) and max(upload.image.size) <= 600 and upload.image.mode == "RGB"
    assert upload.scale == pytest.approx(upload.image.width / 2000)
    with pytest.raises(ImageError, match="megapixels"):  # the same pixels as PNG: decoded whole, refused
        load_upload(_encoded(photo, "PNG"), max_side=600)


@pytest.mark.parametrize("kind", ["palette+transparency", "16-bit", "rgba", "grey"])
def test_the_strip_by_strip_reduction_equals_the_whole_image_reduced(monkeypatch, kind):
    monkeypatch.setattr(uploads, "STRIP_PIXELS", 20_000)  # many strips, a last one cut short
    rgb = _noise(613, 401)
    image = {"palette+transparency": Image.fromarray(rgb).convert("P"),
             "16-bit": Image.fromarray((_noise(613, 401, 1)[..., 0].astype(np.uint16) * 257)),
             "rgba": Image.fromarray(np.dstack([rgb, _noise(613, 401, 1, seed=1)])),
             "grey": Image.fromarray(rgb).convert("L")}[kind]
    extra = {"transparency": 7} if kind.startswith("palette") else {}
    data = _encoded(image, "PNG", **extra)
    reference = load_image(data).reduce(3)  # the whole image converted, then reduced
    upload = load_upload(data, max_side=205)  # factor 3
    assert upload.image.size == reference.size == (134, 205)
    assert np.array_equal(np.asarray(upload.image), np.asarray(reference))
    assert np.array_equal(np.asarray(load_upload(data).image), np.asarray(load_image(data)))  # small: as before


def test_orientation_and_boxes_are_in_the_uploads_pixels():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the upright photo is 1200 wide, 3000 high
    upload = load_upload(_encoded(Image.fromarray(_noise(1200, 3000)), "JPEG", exif=exif.tobytes()), max_side=1000)
    assert upload.size == (1200, 3000) and upload.image.height <= 1000
    assert upload.image.width / upload.image.height == pytest.approx(0.4, abs=0.01)
    box = (120, 300, 600, 1500)
    assert upload.to_upload(upload.to_image(box)) == pytest.approx(box, abs=1)
    assert reduced_rgb(Image.new("I;16", (4, 4), 65535), 1).getpixel((0, 0)) == (255, 255, 255)


def test_a_served_photo_search_answers_with_the_box_in_the_uploads_pixels(small_engine, tmp_path):
    from modeling.serving.registry import EngineRegistry
    from modeling.serving.service import SearchService

    service = SearchService(EngineRegistry.from_engines({"tiny": small_engine}))
    catalog_photo = Image.open(small_engine.index.items["image_path"].iloc[2]).convert("RGB")
    big = tmp_path / "big.png"
    times = -(-2 * uploads.WORKING_SIDE // max(catalog_photo.size))
    catalog_photo.resize((catalog_photo.width * times, catalog_photo.height * times)).save(big)
    assert max(Image.open(big).size) > uploads.WORKING_SIDE
    box = (60, 90, catalog_photo.width * (times - 1), catalog_photo.height * (times - 1))
    answer = service.image(str(big), k=3, box=",".join(map(str, box)))
    assert answer.data["query"]["searched"]["box"] == pytest.approx(list(box), abs=4)
    assert max(answer.searched.size) <= uploads.WORKING_SIDE
    with pytest.raises(ImageError, match="megapixels"):
        service.image(str(png_bomb(tmp_path / "bomb.png", "P", 7000)), k=3)
