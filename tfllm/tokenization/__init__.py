"""Vocab training, the in-graph TF tokenizer and the TF-free tokenizer."""
