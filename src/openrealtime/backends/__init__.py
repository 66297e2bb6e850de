"""openrealtime.backends package."""
