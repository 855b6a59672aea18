"""Durable repository audit jobs: the model, the store port, and the runner."""
