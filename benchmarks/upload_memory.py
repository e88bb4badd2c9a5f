"""Memory of photo searches on the served app: peak extra RSS per upload and RSS after the batch (issue 28).

    python benchmarks/upload_memory.py --model runs/dual-encoder
    python benchmarks/upload_memory.py --model runs/world-40-p035-composed --rounds 3

`app.py` starts in a fresh process on a free port (the default model only). The photos are made here, in a
temporary folder: the issue's 7000x7000 palette PNG (a few kB) and 16-bit 6000x6000 TIFF (about 100 kB), both over
the upload limit; the largest photos the limit takes, each the worst of its kind (a 4000x4000 palette PNG, 16-bit
TIFF and RGBA PNG: 16 megapixels decoded whole; an 8000x6000 JPEG decoded at reduced scale); a phone-sized
JPEG. Each is searched through the photo tab's API (`/search_image`, as gradio_client sends it) `--rounds` times.
Before each request the server's peak RSS is reset (/proc/PID/clear_refs), so the peak it reports after the
request is that request's. Targets: <= 150 MB peak extra RSS per request, RSS after the batch within 10 % of its
start (measured after a warm-up search with a catalog-sized photo).
"""

from __future__ import annotations

import argparse
import http.client
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.app_latency import OFFLINE, free_port, stop, write_report

MB = 1024 * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def palette_png(path: Path, width: int, height: int) -> Path:
    """A palette PNG of horizontal colour bands, written block by block (a few kB for the issue's 7000x7000)."""
    palette = bytes(np.random.default_rng(0).integers(0, 256, 3 * 256, dtype=np.uint8))
    compressor, blocks = zlib.compressobj(9), []
    for row in range(height):
        blocks.append(compressor.compress(b"\x00" + bytes([row * 256 // height]) * width))
    blocks.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"PLTE", palette)
                     + _chunk(b"IDAT", b"".join(blocks)) + _chunk(b"IEND", b""))
    return path


def make_photos(folder: Path, catalog_photo: str) -> dict[str, Path]:
    """The benchmark's photos (see the module docstring), written to `folder`."""
    from PIL import Image

    photos = {"issue: palette PNG 7000x7000": palette_png(folder / "palette-7000.png", 7000, 7000)}
    ramp = (np.linspace(0, 65535, 6000, dtype=np.uint32)[None, :] * np.ones((6000, 1), np.uint32)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "grey16-6000.tif", compression="tiff_adobe_deflate")
    photos["issue: 16-bit TIFF 6000x6000"] = folder / "grey16-6000.tif"
    del ramp
    photos["limit: palette PNG 4000x4000"] = palette_png(folder / "palette-4000.png", 4000, 4000)
    ramp = (np.linspace(0, 65535, 4000, dtype=np.uint32)[None, :] * np.ones((4000, 1), np.uint32)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "grey16-4000.tif", compression="tiff_adobe_deflate")
    photos["limit: 16-bit TIFF 4000x4000"] = folder / "grey16-4000.tif"
    del ramp
    base = Image.open(catalog_photo).convert("RGB")
    rgba = base.resize((4000, 4000)).convert("RGBA")
    rgba.save(folder / "rgba-4000.png")
    photos["limit: RGBA PNG 4000x4000"] = folder / "rgba-4000.png"
    del rgba
    base.resize((8000, 6000)).save(folder / "jpeg-8000x6000.jpg", quality=85)
    photos["JPEG 8000x6000 (48 MP)"] = folder / "jpeg-8000x6000.jpg"
    base.resize((4032, 3024)).save(folder / "phone-4032x3024.jpg", quality=90)
    photos["phone JPEG 4032x3024"] = folder / "phone-4032x3024.jpg"
    return photos


def memory_mb(pid: int) -> dict[str, float]:
    """The server's VmRSS and VmHWM (peak since the last reset), in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
        return True
    except OSError:
        return False


def start_app(model: str, catalog: str, startup_timeout: float = 300) -> tuple[subprocess.Popen, int]:
    """`app.py` serving `model` alone on a free port, answering; (process, port). Its log is written to a
    temporary file (named in the app's `log_path` attribute)."""
    port = free_port()
    command = [sys.executable, str(REPO / "app.py"), "--model", model, "--catalog", catalog, "--port", str(port),
               "--extra-model", model]  # only the default model: nothing else loads
    # The app's log goes to a file: a pipe nobody reads fills up and blocks the server mid-request.
    log = tempfile.NamedTemporaryFile("w+", prefix="app-", suffix=".log", delete=False)
    server = subprocess.Popen(command, cwd=REPO, env={**os.environ, **OFFLINE}, stdout=subprocess.DEVNULL,
                              stderr=log, text=True)
    start = time.perf_counter()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited during start-up:\n{Path(log.name).read_text()[-3000:]}")
        if time.perf_counter() - start > startup_timeout:
            stop(server)
            raise RuntimeError(f"no answer within {startup_timeout} s")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/gradio_api/info")
            if connection.getresponse().status == 200:
                server.log_path = log.name
                return server, port
        except OSError:
            time.sleep(0.5)


def search(client, model: str, path: Path) -> str:
    """One photo search through the photo tab's API; "ok" or the refusal's message."""
    from gradio_client import handle_file

    try:
        _, data = client.predict(handle_file(str(path)), 10, model, "Any", "Any", "Any", False, 0.3, "",
                                 api_name="/search_image")
    except Exception as error:  # noqa: BLE001 - a refusal comes back as the client's error with its message
        return f"refused: {str(error).splitlines()[-1][:90]}"
    return "ok" if data.get("results") else "no results"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/dual-encoder")
    p.add_argument("--catalog", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--rounds", type=int, default=2, help="times each photo is searched")
    p.add_argument("--output", default="runs/bench/upload_memory.json")
    args = p.parse_args(argv)
    os.environ.update(OFFLINE)
    from gradio_client import Client
    import pandas as pd

    items = pd.read_parquet(Path(args.model) / "index" / "items.parquet", columns=["image_path"])
    folder = Path(tempfile.mkdtemp(prefix="upload-memory-"))
    photos = make_photos(folder, items["image_path"].iloc[0])
    server, port = start_app(args.model, args.catalog)
    model = Path(args.model.rstrip("/")).name
    report = {"model": args.model, "cpu_count": os.cpu_count(), "requests": []}
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
        for _ in range(2):  # warm-up: the first photo search loads what photo searches need
            search(client, model, Path(items["image_path"].iloc[1]))
        start = memory_mb(server.pid)["VmRSS"]
        print(f"app answering on port {port}; RSS after warm-up {start:.0f} MB; "
              f"peak reset {'works' if reset_peak(server.pid) else 'unavailable'}", flush=True)
        for round_ in range(args.rounds):
            for name, path in photos.items():
                reset_peak(server.pid)
                before = memory_mb(server.pid)["VmRSS"]
                began = time.perf_counter()
                outcome = search(client, model, path)
                after = memory_mb(server.pid)
                row = {"photo": name, "round": round_, "bytes": path.stat().st_size, "outcome": outcome,
                       "seconds": time.perf_counter() - began, "rss_before_mb": before,
                       "peak_extra_mb": after["VmHWM"] - before, "rss_after_mb": after["VmRSS"]}
                report["requests"].append(row)
                print(f"{name:32s} {row['bytes'] / 1024:8.0f} kB  {outcome[:60]:60s}  "
                      f"peak +{row['peak_extra_mb']:5.0f} MB  RSS after {after['VmRSS']:5.0f} MB  "
                      f"{row['seconds']:.2f} s", flush=True)
        time.sleep(2)
        end = memory_mb(server.pid)["VmRSS"]
    finally:
        stop(server)
    worst = max(r["peak_extra_mb"] for r in report["requests"])
    report.update(rss_start_mb=start, rss_end_mb=end, rss_change=(end - start) / start, worst_peak_extra_mb=worst)
    ok = worst <= 150 and abs(report["rss_change"]) <= 0.10
    print(f"worst peak extra RSS per request {worst:.0f} MB (target <= 150); RSS {start:.0f} -> {end:.0f} MB "
          f"({report['rss_change']:+.1%}, target within 10 %): {'OK' if ok else 'MISSED'}", flush=True)
    write_report(args.output, report)
    return report


if __name__ == "__main__":
    main()
