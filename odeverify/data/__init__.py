"""Package data (expected failures)."""
