"""Unit tests: one module each, no services unless a test asks for a fixture."""
