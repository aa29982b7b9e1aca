"""Offline: classify, evaluate and the dataset reader."""
