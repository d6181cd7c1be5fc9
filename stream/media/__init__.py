"""pedsam.stream.media."""
