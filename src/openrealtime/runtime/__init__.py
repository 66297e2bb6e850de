"""openrealtime.runtime package."""
