"""pedsam.stream.web."""
