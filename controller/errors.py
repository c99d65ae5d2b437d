"""API errors as ``{"error": {"code", "message", "message_vi"}}``."""

from __future__ import annotations

from flask import jsonify


class ApiError(Exception):
    """Raised by API views; rendered by :func:`error_response`."""

    def __init__(self, status: int, code: str, message: str, message_vi: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.message_vi = message_vi


def error_response(status: int, code: str, message: str, message_vi: str):
    """A JSON error with a stable code and messages for people."""
    resp = jsonify({"error": {"code": code, "message": message, "message_vi": message_vi}})
    resp.status_code = status
    return resp


UNAUTHORIZED = ApiError(401, "auth.required", "authentication required", "Cần đăng nhập.")
FORBIDDEN = ApiError(403, "auth.forbidden", "your role or area does not allow this",
                     "Bạn không có quyền thực hiện thao tác này.")
