"""tfllm_serving: an onnxruntime server that speaks the TensorFlow Serving API.

Never imports tensorflow, tfllm or tfllm_export, so it installs alone with
`pip install ".[serve]"`.
"""

__version__ = "0.1.0"
