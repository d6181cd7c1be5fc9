"""pedsam protos."""
