"""openrealtime: a self-hosted server that speaks the OpenAI Realtime API (GA)."""

__version__ = "0.1.0"
