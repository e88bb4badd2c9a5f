"""VSC item embeddings on a first run: every distinct description is encoded once, and each item gets its own."""

import numpy as np
import pandas as pd

from modeling.retrieval.engine.vsc import VSCScorer


class CountingEncoder:
    """A sentence encoder stand-in: a deterministic unit vector per text, and a record of what it encoded."""

    name, dim = "counting", 8

    def __init__(self):
        self.encoded = []

    def encode(self, texts, progress=False):
        self.encoded.extend(texts)
        vectors = np.array([np.random.default_rng(sum(map(ord, t))).normal(size=self.dim) for t in texts])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_repeated_titles_are_encoded_once():
    titles = ["Red Dress", "Blue Shirt", "Red Dress", "Black Watch", "Blue Shirt", "Red Dress"]
    items = pd.DataFrame({"id": [str(i) for i in range(len(titles))], "title": titles, "baseColour": "Red",
                          "articleType": "Dresses", "gender": "Women"})
    encoder = CountingEncoder()
    scorer = VSCScorer(encoder, items, "title")
    assert sorted(encoder.encoded) == ["Black Watch", "Blue Shirt", "Red Dress"]
    expected = CountingEncoder().encode(titles)
    np.testing.assert_allclose(scorer.embeddings, expected)
    assert scorer.embeddings.shape == (6, 8)
