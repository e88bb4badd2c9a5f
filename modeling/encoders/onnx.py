"""ONNX Runtime encoders: an ONNX export of one of the package's models (`python -m modeling.hub.onnx_export`) with
the encoding interface of the PyTorch models, so the engine and the index builder use either."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

ONNX_CONFIG = "onnx_config.json"
IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"


class OnnxEncoder:
    """An ONNX export run with ONNX Runtime, with the encoding interface of the PyTorch models
    (`get_image_features(pixel_values)`, `get_text_features(input_ids, attention_mask)`, torch tensors in and out)."""

    def __init__(self, onnx_dir: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        onnx_dir = Path(onnx_dir)
        config_file = onnx_dir / ONNX_CONFIG
        if not config_file.exists():
            raise FileNotFoundError(f"{onnx_dir} is not an ONNX export of this project ({ONNX_CONFIG} is missing)")
        self.onnx_config = json.loads(config_file.read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.image_session = ort.InferenceSession(str(onnx_dir / IMAGE_FILE), options, providers=providers)
        text_file = onnx_dir / TEXT_FILE
        self.text_session = (ort.InferenceSession(str(text_file), options, providers=providers)
                             if text_file.exists() else None)

    @property
    def has_text(self) -> bool:
        return self.text_session is not None

    @property
    def fingerprint(self) -> str:
        return self.onnx_config["fingerprint"]

    def get_image_features(self, pixel_values, **_) -> torch.Tensor:
        pixel_values = pixel_values.numpy() if torch.is_tensor(pixel_values) else np.asarray(pixel_values)
        (out,) = self.image_session.run(None, {"pixel_values": pixel_values.astype(np.float32)})
        return torch.from_numpy(out)

    def get_text_features(self, input_ids, attention_mask=None, **_) -> torch.Tensor:
        if self.text_session is None:
            raise ValueError("this ONNX export has no text encoder")
        ids = input_ids.numpy() if torch.is_tensor(input_ids) else np.asarray(input_ids)
        mask = np.ones_like(ids) if attention_mask is None else (
            attention_mask.numpy() if torch.is_tensor(attention_mask) else np.asarray(attention_mask))
        (out,) = self.text_session.run(None, {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)})
        return torch.from_numpy(out)
