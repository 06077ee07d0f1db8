"""Generated TF Serving wire messages (``tensorflow``, ``tensorflow.error``,
``tensorflow.serving`` packages) and the script that regenerates them.

Only the gRPC front end imports this package: its message names equal TensorFlow's,
so it must never share a process with ``tensorflow`` or ``tensorflow_serving``.
"""
