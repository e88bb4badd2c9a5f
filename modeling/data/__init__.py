"""Data: catalog loading (`catalog`, raw sources in `sources`), image opening (`images`), item text (`text`),
catalog-derived composed triplets (`composed`), Fashion-IQ (`fashion_iq`) and query files (`queries`). Never imports
the models, torch or transformers.

Importing the package loads nothing: the names below load their module on first use, so the light modules (`text`)
stay light for the layers above.
"""

import importlib

_EXPORTS = {
    "ATTRIBUTES": "catalog",
    "CatalogError": "sources",
    "ImageError": "images",
    "attribute_caption": "text",
    "item_description": "text",
    "item_text": "text",
    "load_catalog": "catalog",
    "load_catalog_with_report": "catalog",
    "load_image": "images",
    "normalise_title": "text",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"modeling.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'modeling.data' has no attribute {name!r}")
