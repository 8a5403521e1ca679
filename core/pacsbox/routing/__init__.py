"""Route registry and HTTP middleware."""
