"""Data: catalog loading (`catalog`), image opening (`images`), composed triplets and Fashion-IQ (`composed`), query
files (`queries`). Never imports the models, torch or transformers."""

from modeling.data.catalog import (ATTRIBUTES, CatalogError, ImageError, attribute_caption, item_description,  # noqa: F401
                                   item_text, load_catalog, load_catalog_with_report, load_image, normalise_title)
