"""Small helpers shared by every subpackage: atomic file writes and hashing."""
