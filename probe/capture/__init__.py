"""Capture: record attention and activations of a variant on knowledge probes into a zarr store.

``probe.capture.store`` reads a store without torch; ``probe.capture.run`` loads models and writes one.
"""
