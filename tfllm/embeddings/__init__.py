"""Sentence embeddings: pooling, embedding models, `tfllm embed`."""
