"""Analysis: similarity measures between layer representations."""
