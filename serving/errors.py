"""Errors a request can end with, each carrying its HTTP status and gRPC code.

REST answers ``{"error": message}`` with ``http_status``; gRPC aborts with the code
named by ``grpc_code`` (a ``grpc.StatusCode`` member name, so this module needs no grpc).
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class: ``str(err)`` is the message the client sees.

    >>> err = InvalidInput("instances must be a list")
    >>> err.http_status, err.grpc_code, str(err)
    (400, 'INVALID_ARGUMENT', 'instances must be a list')
    """

    http_status = 500
    grpc_code = "INTERNAL"


class InvalidInput(ServingError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ServingError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(ServingError):
    """Model not loaded yet, or the batch queue is full: the client may retry."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class QueueFull(Unavailable):
    pass


class DeadlineExceeded(ServingError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class Unauthenticated(ServingError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
