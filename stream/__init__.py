"""pedsam stream."""
