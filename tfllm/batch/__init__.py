"""Batch inference over exported models: rows from an export (`exported`) and the Apache
Beam pipeline of `tfllm batch` (`pipeline`)."""
