"""Optional compute backends (imported lazily: torch is not a dependency of htsr)."""
