"""Media: sources, capture, decoding, preprocessing, the ring, the scheduler, the window rule."""
