"""Retrieval: the search engine (`search`), vector index (`index`), keyword index (`lexical`), VSC (`vsc`), index
building (`build`) and the app's model registry (`serving`). Importing the package loads nothing heavy."""
