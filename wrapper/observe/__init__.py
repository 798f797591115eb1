"""observe wing."""
