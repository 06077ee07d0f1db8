"""tfllm_export: SavedModel, ONNX and TFLite artifacts with an accuracy gate."""
