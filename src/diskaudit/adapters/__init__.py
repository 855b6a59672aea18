"""Adapters of the ports the core defines: job stores (SQLite; later PostgreSQL)."""
