"""Evaluation: knowledge accuracy on probes and perplexity on held-out text."""
