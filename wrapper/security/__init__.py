"""security wing."""
