"""One module per CLI subcommand: each turns settings into a run of the application."""
