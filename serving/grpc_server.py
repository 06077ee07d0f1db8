"""gRPC front end: ``tensorflow.serving.PredictionService/{Predict,GetModelMetadata}`` and
``ModelService/GetModelStatus``, wire-compatible with the official tensorflow-serving-api
client (the messages come from :mod:`tfllm_serving.protos`, compiled from the public spec).

Text goes in as a ``DT_STRING`` tensor named ``text`` (+ ``text_pair``), token ids as
``DT_INT32``/``DT_INT64`` tensors ``input_ids``/``attention_mask``/``token_type_ids``;
``logits`` and ``probabilities`` come back as ``DT_FLOAT`` tensors. Client side, with TF::

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(addr))
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "sst2"
    req.inputs["text"].CopyFrom(tf.make_tensor_proto(["a fine film ."]))
    tf.make_ndarray(stub.Predict(req).outputs["probabilities"])
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from .config import ServerConfig
from .errors import DeadlineExceeded, InvalidInput, ServingError, Unauthenticated
from .inputs import encode_named
from .manager import ModelManager, Servable
from .protos import tf_framework_pb2 as fw
from .protos import tf_serving_apis_pb2 as apis
from .protos import tf_serving_apis_pb2_grpc as apis_grpc

log = logging.getLogger(__name__)

_INT_TYPES = {
    fw.DT_INT32: ("int_val", "<i4"),
    fw.DT_INT64: ("int64_val", "<i8"),
    fw.DT_INT16: ("int_val", "<i2"),
    fw.DT_INT8: ("int_val", "<i1"),
    fw.DT_UINT8: ("int_val", "<u1"),
}


def tensor_to_value(tensor: fw.TensorProto, name: str) -> list[str] | np.ndarray:
    """A request TensorProto as a list of str (DT_STRING) or an integer ndarray."""
    shape = [d.size for d in tensor.tensor_shape.dim]
    if any(s < 0 for s in shape):
        raise InvalidInput(f"{name}: negative dimension in shape {shape}")
    count = int(np.prod(shape)) if shape else 1
    if tensor.dtype == fw.DT_STRING:
        if len(tensor.string_val) != count:
            raise InvalidInput(f"{name}: {len(tensor.string_val)} strings for shape {shape}")
        if len(shape) > 1:
            raise InvalidInput(f"{name}: expected a [batch] string tensor, got shape {shape}")
        try:
            return [s.decode("utf-8") for s in tensor.string_val]
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{name}: strings must be UTF-8 text") from exc
    if tensor.dtype not in _INT_TYPES:
        dtype = fw.DataType.Name(tensor.dtype) if tensor.dtype in fw.DataType.values() \
            else str(tensor.dtype)
        raise InvalidInput(f"{name}: dtype {dtype} is not accepted; use DT_STRING text or "
                           "DT_INT32/DT_INT64 token ids")
    field, wire = _INT_TYPES[tensor.dtype]
    if tensor.tensor_content:
        if len(tensor.tensor_content) != count * np.dtype(wire).itemsize:
            raise InvalidInput(f"{name}: tensor_content size does not match shape {shape}")
        values = np.frombuffer(tensor.tensor_content, dtype=wire)
    else:
        values = np.asarray(getattr(tensor, field), dtype=np.int64)
        if values.size == 1 and count > 1:  # TF's repeated-last-value encoding
            values = np.full(count, values[0], dtype=np.int64)
        if values.size != count:
            raise InvalidInput(f"{name}: {values.size} values for shape {shape}")
    return values.astype(np.int64).reshape(shape)


def array_to_tensor(array: np.ndarray) -> fw.TensorProto:
    array = np.ascontiguousarray(array, dtype="<f4")
    return fw.TensorProto(
        dtype=fw.DT_FLOAT,
        tensor_shape=fw.TensorShapeProto(
            dim=[fw.TensorShapeProto.Dim(size=s) for s in array.shape]
        ),
        tensor_content=array.tobytes(),
    )


class _Handler:
    """Shared plumbing: model-spec resolution, errors -> status codes, metrics."""

    def __init__(self, manager: ModelManager, config: ServerConfig) -> None:
        self.manager = manager
        self.config = config

    def resolve(self, spec: apis.ModelSpec) -> Servable:
        if not spec.name:
            raise InvalidInput("model_spec.name is required")
        choice = spec.WhichOneof("version_choice")
        version = spec.version.value if choice == "version" else None
        label = spec.version_label if choice == "version_label" else None
        return self.manager.resolve(spec.name, version, label)

    def call(self, context: grpc.ServicerContext, method: str, model: str,
             fn: Callable[[], tuple[Any, str]]) -> Any:
        started = time.perf_counter()
        status, version = 200, ""
        try:
            response, version = fn()
            return response
        except ServingError as err:
            status = err.http_status
            context.abort(getattr(grpc.StatusCode, err.grpc_code), str(err))
        except Exception as exc:  # noqa: BLE001 - the client gets INTERNAL, the log the trace
            status = 500
            log.exception("grpc request failed", extra={"event": "internal_error"})
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            known = model in self.manager.loaded() or model in self.manager.model_names()
            self.manager.metrics.observe_request(
                model if known else "_unknown", version, method, status,
                time.perf_counter() - started, api="grpc",
            )


class PredictionService(apis_grpc.PredictionServiceServicer, _Handler):
    def Predict(self, request: apis.PredictRequest, context: grpc.ServicerContext) -> Any:
        return self.call(context, "predict", request.model_spec.name,
                         lambda: self._predict(request, context))

    def _predict(self, request: apis.PredictRequest,
                 context: grpc.ServicerContext) -> tuple[apis.PredictResponse, str]:
        servable = self.resolve(request.model_spec)
        signature = request.model_spec.signature_name
        if signature not in ("", "serving_default", "token_ids"):
            raise InvalidInput(f'Serving signature name: "{signature}" not found in '
                               "signature def")
        names = servable.runtime.output_names
        unknown = set(request.output_filter) - set(names)
        if unknown:
            raise InvalidInput(f"output_filter: unknown outputs {sorted(unknown)}; "
                               f"available {list(names)}")
        named = {k: tensor_to_value(v, k) for k, v in request.inputs.items()}
        parsed = encode_named(servable.runtime, named, self.config.limits.max_instances)
        timeout = self.config.limits.request_timeout_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining)
        future = servable.submit(parsed.batch)
        try:
            out = future.result(timeout=timeout)
        except futures.TimeoutError as exc:
            future.cancel()
            raise DeadlineExceeded(f"request exceeded the {timeout:.3f} s timeout") from exc
        response = apis.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature or "serving_default"
        wanted = list(request.output_filter) or list(names)
        arrays = out.arrays()
        for name in wanted:
            response.outputs[name].CopyFrom(array_to_tensor(arrays[name]))
        return response, str(servable.version)

    def GetModelMetadata(self, request: apis.GetModelMetadataRequest,
                         context: grpc.ServicerContext) -> Any:
        return self.call(context, "metadata", request.model_spec.name,
                         lambda: self._metadata(request))

    def _metadata(self, request: apis.GetModelMetadataRequest
                  ) -> tuple[apis.GetModelMetadataResponse, str]:
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise InvalidInput('metadata_field must be exactly ["signature_def"]')
        servable = self.resolve(request.model_spec)
        response = apis.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_map = json_format.ParseDict(
            servable.runtime.signature_defs(), apis.SignatureDefMap()
        )
        response.metadata["signature_def"].Pack(signature_map)
        return response, str(servable.version)


class ModelService(apis_grpc.ModelServiceServicer, _Handler):
    def GetModelStatus(self, request: apis.GetModelStatusRequest,
                       context: grpc.ServicerContext) -> Any:
        return self.call(context, "status", request.model_spec.name,
                         lambda: self._status(request))

    def _status(self, request: apis.GetModelStatusRequest
                ) -> tuple[apis.GetModelStatusResponse, str]:
        spec = request.model_spec
        if not spec.name:
            raise InvalidInput("model_spec.name is required")
        choice = spec.WhichOneof("version_choice")
        statuses = self.manager.model_status(
            spec.name,
            spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else None,
        )
        body = {"model_version_status": [s.to_json() for s in statuses]}
        return json_format.ParseDict(body, apis.GetModelStatusResponse()), ""


class BearerAuthInterceptor(grpc.ServerInterceptor):
    """UNAUTHENTICATED unless metadata ``authorization: Bearer <token>`` matches."""

    def __init__(self, token: bytes) -> None:
        self.token = token

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(
                Unauthenticated("missing or invalid bearer token")))

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                raw = value.encode() if isinstance(value, str) else value
                scheme, _, credentials = raw.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self.token
                ):
                    return continuation(handler_call_details)
        return self._deny


class GrpcServer:
    """The gRPC endpoint on ``config.host:config.grpc_port``, sharing the REST server's
    models, batchers and metrics."""

    def __init__(self, manager: ModelManager, config: ServerConfig,
                 auth_token: bytes | None = None) -> None:
        interceptors = [BearerAuthInterceptor(auth_token)] if auth_token else []
        limit = config.limits.max_body_bytes
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="grpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", limit),
                     ("grpc.max_send_message_length", 64 << 20)],
        )
        apis_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(manager, config), self.server
        )
        apis_grpc.add_ModelServiceServicer_to_server(ModelService(manager, config), self.server)
        address = f"{config.host}:{config.grpc_port}"
        if self.server.add_insecure_port(address) == 0:
            raise OSError(f"cannot bind gRPC to {address}")
        self.address = address

    def start(self) -> None:
        self.server.start()

    def stop(self, grace: float = 2.0) -> None:
        self.server.stop(grace).wait()
