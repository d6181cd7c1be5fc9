"""pedsam workers."""
