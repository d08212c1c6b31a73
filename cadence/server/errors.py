"""OpenAI-shaped error bodies: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


_WHY = {400: "bad input (the message names it; `param` the field)", 401: "missing or wrong API key",
        404: "unknown voice or model", 409: "a voice of that name exists", 413: "request body too large",
        422: "a damaged voice file", 429: "queue full (Retry-After)", 503: "loading, or generation failed",
        504: "no audio within the request timeout"}


def documented(*codes: int) -> dict:
    """OpenAPI `responses` for these status codes, each with the error body's schema."""
    return {c: {"model": ErrorBody, "description": _WHY[c]} for c in codes}


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)
