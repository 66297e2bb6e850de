"""openrealtime.transports package."""
