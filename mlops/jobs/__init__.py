"""One module per batch step; each exposes `main(argv)` and runs alone from the command line."""
