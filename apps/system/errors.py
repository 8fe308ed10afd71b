"""The one error type services raise; the API and the pages turn it into a 4xx."""


class ApplicationError(Exception):
    """A request the product refuses, with a message for the user and the field at fault."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFoundError(ApplicationError):
    """The object does not exist or the user may not see it (never reveals which)."""

    status = 404


class PermissionDeniedError(ApplicationError):
    """The user sees the object but their role does not allow the action."""

    status = 403


class ConflictError(ApplicationError):
    """The request clashes with existing data (a duplicate name, say)."""

    status = 409


class RateLimitedError(ApplicationError):
    """Too many attempts from one address or for one account."""

    status = 429
