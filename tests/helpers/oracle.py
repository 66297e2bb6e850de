"""The conformance oracle shared by every test that receives server events (spec §8.2).

Exactly what openai-agents-python validates each event with: the official SDK's server-event
union, discriminated on ``type``.
"""

from __future__ import annotations

from typing import Annotated, Any

from openai.types.realtime import RealtimeServerEvent
from pydantic import Field, TypeAdapter

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(
    Annotated[RealtimeServerEvent, Field(discriminator="type")]
)
