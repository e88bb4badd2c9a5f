"""Query understanding: what a shopper's words say about the product. `parser` (`QueryParser` -> `QueryIntent`:
catalog values, the synonym lexicon `lexicon.json`, fuzzy misspellings, negations), `heads` (the learned fallback,
`IntentHeads`) and `boosts` (what an understood query adds to an item's score). Independent of the backends."""
