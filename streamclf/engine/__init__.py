"""Engine: inference backends, model loading with thread settings, and the batcher."""
