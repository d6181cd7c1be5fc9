"""pedsam.stream.core."""
