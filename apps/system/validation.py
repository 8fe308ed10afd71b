"""Checks of free-text input that every app's services share."""

from apps.system.errors import ApplicationError


def text_required(value: str | None, *, field: str, max_length: int) -> str:
    """``value`` stripped; refused, naming ``field``, when empty or longer than ``max_length``."""
    value = (value or "").strip()
    if not value:
        raise ApplicationError(f"{field.capitalize()} is required.", field=field)
    if len(value) > max_length:
        raise ApplicationError(
            f"{field.capitalize()} is longer than {max_length} characters.", field=field
        )
    return value
