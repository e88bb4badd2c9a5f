"""Encoders: model folders to embeddings (`loading`), the MiniLM sentence encoder (`sentence`), ONNX Runtime
encoders (`onnx`)."""
