"""Built-in backends. Each registers under the `harness.backends` entry-point group."""
