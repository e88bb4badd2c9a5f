"""Multimodal fashion search, in layers (each a subpackage; imports go downwards only, kept by `lint-imports`;
evaluation and serving share a level and are independent):

    hub         push model folders, datasets, ONNX exports and the Space (`python -m modeling.hub ...`)
    training    one task per model behind `training.base.Task`, the Accelerate loop's helpers
    evaluation  metrics, protocols, baselines, analysis, reports and model cards
    serving     the served search: request contract, batching, JSON routes, the app's model registry, CPU tuning
    retrieval   query understanding, vector backends (FAISS, Qdrant), the search engine, VSC, index building
    encoders    model loading, fingerprints, batched encoding, the sentence encoder, ONNX Runtime encoders
    data        catalog loading, image opening, composed triplets, query files          (never models)
    models      configurations, modeling files, processors, composition, losses         (torch/transformers/peft)
    utils       atomic writes and staged folders

Importing `modeling` itself loads nothing heavy: the model classes below load (and register with the Auto classes)
on first use, e.g. `from modeling import DualEncoderModel`.
"""

_MODEL_EXPORTS = ("DEFAULT_CLIP_MODEL", "DEFAULT_TEXT_MODEL", "DualEncoderConfig", "DualEncoderImageProcessor",
                  "DualEncoderModel", "DualEncoderOutput", "FashionClipConfig", "FashionClipModel", "FashionClipOutput",
                  "FashionSearchProcessor", "FashionVaeConfig", "FashionVaeModel", "FashionVaeOutput",
                  "reconstruction_grid")

__all__ = list(_MODEL_EXPORTS)


def __getattr__(name: str):
    if name in _MODEL_EXPORTS:
        import modeling.models

        return getattr(modeling.models, name)
    raise AttributeError(f"module 'modeling' has no attribute {name!r}")
