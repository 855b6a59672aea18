"""The disk usage exporter: background scans into immutable snapshots, served as metrics."""
