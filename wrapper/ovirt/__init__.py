"""ovirt wing."""
