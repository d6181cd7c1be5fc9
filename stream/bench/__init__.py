"""pedsam.stream.bench."""
