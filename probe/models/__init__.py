"""Models: the registry of names, loading from local weights, and hooked wrappers."""
