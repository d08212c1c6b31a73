"""`cadence serve`: an OpenAI-compatible speech API over the batched engine."""

from .app import create_app
from .settings import ServerSettings

__all__ = ["create_app", "ServerSettings"]
