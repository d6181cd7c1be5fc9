"""pedsam.stream.runs."""
