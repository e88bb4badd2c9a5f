"""The image loader every upload goes through: size checked from the header before any pixel is decoded (every
mode), transparency on white, 16-bit scaled (not clipped), the first frame of an animation, messages without
library internals."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from modeling.data.images import MAX_IMAGE_PIXELS, ImageError, load_image, open_image

# Over MAX_IMAGE_PIXELS (50 M) and under Pillow's own DecompressionBombError limit (179 M): only our check stops them.
BOMB_SIDE = 8_000  # 64 megapixels
GREY_BOMB_SIDE = 13_000  # 169 megapixels: the greyscale bomb Gradio used to decode (5.9 s, +0.9 GB)
# PNG colour type, bit depth, bytes per pixel, and the mode Pillow opens it in.
PNG_MODES = {"1": (0, 1, 1 / 8), "L": (0, 8, 1), "I;16": (0, 16, 2), "LA": (4, 8, 2), "P": (3, 8, 1),
             "RGB": (2, 8, 3), "RGBA": (6, 8, 4)}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, mode: str, side: int = BOMB_SIDE) -> Path:
    """A valid PNG of side x side black pixels in `mode`, a few hundred kB on disk, written row block by row block
    (never the whole image in memory)."""
    colour_type, depth, bytes_per_pixel = PNG_MODES[mode]
    row = b"\x00" * (1 + int(np.ceil(side * bytes_per_pixel)))  # filter byte + pixels
    compressor, blocks = zlib.compressobj(9), []
    for start in range(0, side, 500):
        blocks.append(compressor.compress(row * min(500, side - start)))
    blocks.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, depth, colour_type, 0, 0, 0)
    palette = _chunk(b"PLTE", bytes(range(3)) * 1) if colour_type == 3 else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + palette + _chunk(b"IDAT", b"".join(blocks))
                     + _chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoding fails the test: the refusal must come from the header alone."""
    calls = []

    def forbidden(self, *args, **kwargs):
        calls.append(self.size)
        raise AssertionError(f"decoded a {self.size} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(Image.Image, "load", forbidden)
    return calls


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("mode", sorted(PNG_MODES))
def test_bombs_of_every_mode_are_refused_from_the_header(mode, tmp_path, no_decoding):
    bomb = png_bomb(tmp_path / f"bomb-{mode.replace(';', '')}.png", mode)
    assert bomb.stat().st_size < 2_000_000 and BOMB_SIDE ** 2 > MAX_IMAGE_PIXELS
    with Image.open(bomb) as header:
        assert header.mode == mode and header.size == (BOMB_SIDE, BOMB_SIDE)  # a real image of that mode
    for load in (open_image, load_image):
        with pytest.raises(ImageError, match="megapixels"):
            load(str(bomb))
    with pytest.raises(ImageError, match="megapixels"):
        load_image(bomb.read_bytes())
    assert no_decoding == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_bomb_costs_no_memory(tmp_path):
    """Decoding a 13000x13000 greyscale bomb would take 169 MB; refusing it takes next to nothing."""
    import resource
    import tracemalloc

    bomb = png_bomb(tmp_path / "bomb.png", "L", GREY_BOMB_SIDE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    with pytest.raises(ImageError, match="megapixels"):
        load_image(str(bomb))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert peak < 5_000_000 and grown_kb < 50_000


@pytest.fixture
def photo() -> Image.Image:
    """A small photo-like RGB image with gradients and edges."""
    y, x = np.mgrid[0:80, 0:60]
    array = np.stack([x * 4, y * 3, (x * y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(array)


def test_16_bit_greyscale_scales_like_its_8_bit_version(photo, tmp_path):
    grey = photo.convert("L")
    eight = tmp_path / "grey8.png"
    grey.save(eight)
    sixteen = tmp_path / "grey16.png"
    Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(sixteen)
    assert Image.open(sixteen).mode == "I;16"
    assert np.array_equal(np.asarray(load_image(str(sixteen))), np.asarray(load_image(str(eight))))
    # Values that are not multiples of 257 keep their top byte: v >> 8, not clipped to 255.
    ramp = tmp_path / "ramp16.png"
    Image.fromarray(np.array([[0, 255, 256, 4660, 65535]], dtype=np.uint16)).save(ramp)
    assert np.asarray(load_image(str(ramp)))[0, :, 0].tolist() == [0, 0, 1, 18, 255]


def test_transparent_cut_out_is_composited_on_white(tmp_path):
    cut_out = np.zeros((40, 30, 4), dtype=np.uint8)
    cut_out[10:30, 5:25] = (200, 20, 20, 255)  # an opaque red product on a fully transparent background
    path = tmp_path / "cut-out.png"
    Image.fromarray(cut_out).save(path)
    rgb = np.asarray(load_image(str(path)))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[20, 15].tolist() == [200, 20, 20]
    half = np.zeros((2, 2, 4), dtype=np.uint8)
    half[..., 3] = 128  # half-transparent black over white: mid grey
    half_path = tmp_path / "half.png"
    Image.fromarray(half).save(half_path)
    assert 120 <= int(np.asarray(load_image(str(half_path)))[0, 0, 0]) <= 135


def test_an_animation_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    for suffix in ("gif", "png", "webp"):
        path = tmp_path / f"animated.{suffix}"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
        pixel = np.asarray(load_image(str(path)))[10, 10]
        assert pixel[0] > 200 and pixel[1] < 50 and pixel[2] < 50, (suffix, pixel)


def test_corrupt_files_are_explained_without_library_internals(photo, tmp_path):
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError) as info:
        load_image(str(truncated))
    message = str(info.value)
    assert "corrupt or truncated" in message
    assert not any(name in message for name in ("OSError", "SyntaxError", "struct.error", "ValueError"))
