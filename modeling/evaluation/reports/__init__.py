"""What evaluate.py writes: the results tables and files (`results`), markdown tables (`tables`), comparison charts
(`plots`), query grids (`grids`), Hugging Face model cards (`cards`) and this project's card texts (`model_card`)."""
