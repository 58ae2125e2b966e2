"""Side-by-side benchmark of harness against the obvious alternatives (python -m bench)."""
