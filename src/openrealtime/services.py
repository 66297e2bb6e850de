"""What every session of a process shares: its config and its engines.

The app's lifespan builds one :class:`Services` and puts it on ``app.state.services``; the
transports read it from there. It lives below both, so the transports never import the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openrealtime.backends.base import Engines
from openrealtime.config import Config
from openrealtime.runtime.lifecycle import Lifecycle

__all__ = ["Services"]


@dataclass(frozen=True)
class Services:
    """What every session shares: the config and the loaded engines (``app.state.services``)."""

    config: Config
    engines: Engines
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    """Readiness, draining and the live sessions of this process."""
