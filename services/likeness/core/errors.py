"""Domain errors, one class per gRPC status; domain code raises these and knows nothing of gRPC.

Every message names the field and, where there is one, the limit:
`images[2].data: image is 50000x50000 (2500.0 MP), over the limit of 40.0 MP`.
The server runtime (core/server.py) maps `code` to a grpc.StatusCode in one place.
"""

from __future__ import annotations


class LikenessError(Exception):
    """Base class; `code` is the gRPC status name the error maps to."""

    code = "INTERNAL"

    def __init__(self, field: str, message: str, *, retry_after_seconds: float | None = None):
        self.field = field
        self.detail = message
        self.retry_after_seconds = retry_after_seconds
        super().__init__(f"{field}: {message}" if field else message)

    @property
    def message(self) -> str:
        return str(self)


class InvalidArgument(LikenessError):
    code = "INVALID_ARGUMENT"


class NotFound(LikenessError):
    code = "NOT_FOUND"


class AlreadyExists(LikenessError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(LikenessError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(LikenessError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(LikenessError):
    code = "UNAVAILABLE"


class DeadlineExceeded(LikenessError):
    code = "DEADLINE_EXCEEDED"


class PermissionDenied(LikenessError):
    code = "PERMISSION_DENIED"


class Unauthenticated(LikenessError):
    code = "UNAUTHENTICATED"


class Cancelled(LikenessError):
    code = "CANCELLED"


class ModelMissing(FailedPrecondition):
    """A model backend lacks its weights: names the missing path, never falls back silently."""

    def __init__(self, model: str, missing: list[str] | str, hint: str = ""):
        paths = [missing] if isinstance(missing, str) else list(missing)
        msg = f"model '{model}' is missing {', '.join(paths)}"
        super().__init__("model", msg + (f"; {hint}" if hint else ""))
        self.model = model
        self.missing = paths


def require(condition: bool, field: str, message: str) -> None:
    """Raises InvalidArgument(field, message) unless `condition` holds."""
    if not condition:
        raise InvalidArgument(field, message)


def check_range(value: float, field: str, low: float, high: float, *, unit: str = "") -> None:
    """INVALID_ARGUMENT naming the field and the range unless low <= value <= high (NaN fails)."""
    if not (low <= value <= high):
        suffix = f" {unit}" if unit else ""
        raise InvalidArgument(field, f"{value}{suffix} is outside [{low}, {high}]{suffix}")
