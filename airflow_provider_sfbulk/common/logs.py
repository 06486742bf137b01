"""The logger the engines write to.

It is the task's own (``self.log`` of an operator) or any ``logging`` logger.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Log"]


class Log(Protocol):
    """What the engines need of a logger: the four levels, with ``%``-style arguments."""

    def debug(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        """Log at DEBUG."""

    def info(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        """Log at INFO."""

    def warning(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        """Log at WARNING."""

    def error(self, msg: str, /, *args: Any, **kwargs: Any) -> Any:
        """Log at ERROR."""
