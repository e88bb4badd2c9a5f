"""What every room of retrieval shares, below them all: the query and result types (`types`) and the word
tokenizer with its BM25 index (`lexical`). Imports nothing heavy."""
