"""BERT backbone (keras-hub) and the heads on top: pretraining, classifier, tagger."""
