"""openrealtime.audio package."""
