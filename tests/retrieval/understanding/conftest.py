"""The real catalog's rows and a parser over them, shared by the query-understanding tests."""

import pandas as pd
import pytest

from modeling.retrieval.understanding.parser import QueryParser


@pytest.fixture(scope="module")
def catalog_items(catalog_dir):
    return pd.read_csv(catalog_dir / "metadata.csv", dtype=str).fillna("")


@pytest.fixture(scope="module")
def parser(catalog_items):
    return QueryParser.from_items(catalog_items)
