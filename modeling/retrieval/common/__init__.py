"""What every room of retrieval shares, below them all: the query and result types (`types`), the backend interface
(`ranking`: `VectorBackend`, `RankRequest`, `ScoreTerm`, `Scope`, `Ranked`) and the word tokenizer with BM25
(`lexical`). Imports nothing heavy."""
