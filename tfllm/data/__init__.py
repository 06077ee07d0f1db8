"""Corpus readers, cleaning, dedup, pretraining examples and task datasets."""
