"""Serving, the layer above retrieval: `service` (`SearchService`, the one request contract of every endpoint),
`arguments` (the request arguments, checked the same way for every transport), `batching` (concurrent text queries
share an encoding pass), `http` (the JSON routes `/api/v1/*` and the security headers), `registry`
(`EngineRegistry` / `ModelSpec`: the app's models, loaded on first use) and `tuning` (bf16 query encoding, threads
per op, malloc arenas). `app.py` imports this layer, never `modeling.retrieval`."""
