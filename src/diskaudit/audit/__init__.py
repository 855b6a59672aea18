"""Repository size audits: hardened clones under a capacity limiter and one job deadline."""
