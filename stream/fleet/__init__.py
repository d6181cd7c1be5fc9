"""pedsam.stream.fleet."""
