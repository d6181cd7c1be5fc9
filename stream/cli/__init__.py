"""pedsam.stream.cli."""
