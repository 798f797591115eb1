"""throttling wing."""
