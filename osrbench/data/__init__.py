"""Data sources (one module per source, each returning uint8 tensors) and the training stream."""
