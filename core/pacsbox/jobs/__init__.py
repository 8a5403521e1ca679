"""The jobs engine (reference section 3)."""
