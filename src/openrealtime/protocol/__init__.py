"""openrealtime.protocol package."""
