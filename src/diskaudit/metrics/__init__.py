"""Prometheus collectors. They read immutable snapshots and statistics; they never do I/O."""
