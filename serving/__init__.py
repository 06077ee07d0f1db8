"""tfllm_serving: an onnxruntime server that speaks the TensorFlow Serving API.

Never imports tensorflow, tfllm or tfllm_export, so it installs alone with
`pip install ".[serve]"`.
"""
