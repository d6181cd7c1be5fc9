"""pedsam partitioner."""
