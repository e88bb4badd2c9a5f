"""Hub: model folders with remote code (`push`), catalog/triplets/index datasets, ONNX exports (`onnx_export`) and
the Space folder. `python -m modeling.hub --help` lists the commands."""
