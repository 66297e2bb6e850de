"""openrealtime.core package."""
