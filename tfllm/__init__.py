"""tfllm: the whole life of a BERT-style model in TensorFlow/Keras.

Importing this package is cheap and never imports tensorflow: every stage that
needs TF imports it inside the function that runs the stage.
"""

__version__ = "0.1.0"
