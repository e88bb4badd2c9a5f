"""The everyday-English files (dev and its once-run test twin): well formed, misspellings carry the query as meant,
every query can be met."""

from pathlib import Path

import pandas as pd
import pytest

from modeling.data.queries import load_queries, relevance_mask

QUERIES = Path(__file__).resolve().parents[2] / "queries"


@pytest.mark.parametrize("name", ["everyday_dev.jsonl", "everyday_test.jsonl"])
def test_everyday_files_are_well_formed_and_answerable(catalog_dir, name):
    """Every query has at least 3 relevant val+test items (P@10 is reported beside its ideal for the few under 10)."""
    queries = load_queries(QUERIES / name)
    assert len(queries) >= 150
    misspelt = [q for q in queries if "misspelling" in q.get("tags", [])]
    assert misspelt and all(q.get("intended") and q["intended"] != q["query"] for q in misspelt)
    assert sum("context" in q.get("tags", []) for q in queries) >= 30
    items = pd.read_csv(catalog_dir / "metadata.csv", dtype=str).fillna("")
    gallery = items["split"].isin(["val", "test"]).to_numpy()
    few = [q["query"] for q in queries if (relevance_mask(items, q["match"], q.get("exclude")) & gallery).sum() < 3]
    assert few == []
