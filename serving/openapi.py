"""OpenAPI 3 description of the REST routes (TF Serving never published one:
tensorflow/serving#1763). Hand-written, served at ``/openapi.json``.

>>> spec = openapi_spec()
>>> sorted(spec["paths"])[:2]
['/healthz', '/metrics']
"""

from __future__ import annotations

from typing import Any

from . import __version__


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema_ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


_ERRORS = {
    "400": _error("Bad input: malformed JSON, wrong types or shapes, too many instances"),
    "401": _error("Missing or wrong bearer token (only with --auth-token-file)"),
    "404": _error("Unknown model, version or label"),
    "413": _error("Request body larger than limits.max_body_bytes"),
    "503": _error("Model not loaded yet, or the batch queue is full; retry"),
    "504": _error("Request took longer than limits.request_timeout_seconds"),
}

_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}
_LABEL = {"name": "label", "in": "path", "required": True, "schema": {"type": "string"}}


def _model_routes() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for suffix, params in (
        ("", [_NAME]),
        ("/versions/{version}", [_NAME, _VERSION]),
        ("/labels/{label}", [_NAME, _LABEL]),
    ):
        base = "/v1/models/{name}" + suffix
        paths[base] = {
            "get": {
                "summary": "Model version status (GetModelStatus)",
                "parameters": params,
                "responses": {"200": _json("Status", "ModelStatus"), **_ERRORS},
            }
        }
        paths[base + "/metadata"] = {
            "get": {
                "summary": "Signature defs (GetModelMetadata)",
                "parameters": params,
                "responses": {"200": _json("Metadata", "ModelMetadata"), **_ERRORS},
            }
        }
        paths[base + ":predict"] = {
            "post": {
                "summary": "Predict, row (instances) or columnar (inputs) format",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Predict"}}
                    },
                },
                "responses": {"200": _json("Predictions", "PredictResult"), **_ERRORS},
            }
        }
        paths[base + ":classify"] = {
            "post": {
                "summary": "Classify tf.Example-like feature objects",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Classify"}}
                    },
                },
                "responses": {"200": _json("Label scores", "ClassifyResult"), **_ERRORS},
            }
        }
        paths[base + ":feedback"] = {
            "post": {
                "summary": "tfllm extension (not TF Serving): the right label for a served "
                           "prediction (its id from X-Request-Id + '-row') or for a text; "
                           "appended to feedback.log_dir/feedback.jsonl (feedback.enabled)",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["label"],
                        "properties": {"id": {"type": "string"}, "text": {"type": "string"},
                                       "label": {"type": "string"}}}}},
                },
                "responses": {"200": {"description": "Recorded"}, **_ERRORS},
            }
        }
    return paths


def openapi_spec() -> dict[str, Any]:
    """The spec as a plain dict."""
    text_or_ids = {
        "oneOf": [
            {"type": "string", "description": "raw text"},
            {
                "type": "object",
                "properties": {"text": {"type": "string"}, "text_pair": {"type": "string"}},
                "required": ["text"],
            },
            {"type": "array", "items": {"type": "integer"}, "description": "input_ids"},
            {
                "type": "object",
                "properties": {
                    k: {"type": "array", "items": {"type": "integer"}}
                    for k in ("input_ids", "attention_mask", "token_type_ids")
                },
                "required": ["input_ids"],
            },
        ]
    }
    schemas = {
        "Error": {"type": "object", "properties": {"error": {"type": "string"}},
                  "required": ["error"]},
        "ModelStatus": {
            "type": "object",
            "properties": {
                "model_version_status": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "version": {"type": "string"},
                            "state": {"type": "string",
                                      "enum": ["START", "LOADING", "AVAILABLE", "UNLOADING",
                                               "END"]},
                            "status": {
                                "type": "object",
                                "properties": {"error_code": {"type": "string"},
                                               "error_message": {"type": "string"}},
                            },
                        },
                    },
                }
            },
        },
        "ModelMetadata": {
            "type": "object",
            "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}},
        },
        "Predict": {
            "type": "object",
            "description": "Exactly one of instances or inputs.",
            "properties": {
                "signature_name": {"type": "string"},
                "instances": {"type": "array", "items": text_or_ids},
                "inputs": {
                    "oneOf": [
                        {"type": "array"},
                        {"type": "object", "properties": {
                            "text": {"type": "array", "items": {"type": "string"}},
                            "text_pair": {"type": "array", "items": {"type": "string"}},
                            "input_ids": {"type": "array"},
                            "attention_mask": {"type": "array"},
                            "token_type_ids": {"type": "array"},
                        }},
                    ]
                },
            },
        },
        "PredictResult": {
            "type": "object",
            "properties": {
                "predictions": {"type": "array", "items": {"type": "object"}},
                "outputs": {"type": "object", "properties": {
                    "logits": {"type": "array"}, "probabilities": {"type": "array"},
                    "embedding": {"type": "array"}}},
            },
        },
        "Classify": {
            "type": "object",
            "properties": {
                "signature_name": {"type": "string"},
                "context": {"type": "object"},
                "examples": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["examples"],
        },
        "ClassifyResult": {
            "type": "object",
            "properties": {"result": {"type": "array", "items": {"type": "array"}}},
        },
    }
    plain = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    paths = {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": plain}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: every model has an AVAILABLE, warmed-up version",
                "responses": {"200": {"description": "Ready"},
                              "503": {"description": "Not ready"}},
            }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": plain}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": {"description": "OpenAPI"}}}},
        **_model_routes(),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tfllm serving (TensorFlow Serving REST API compatible)",
            "version": __version__,
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
