"""Knowledge probes: the fact schema, the built-in fact set, loaders for public formats, scoring."""

from probe.knowledge.schema import Fact, ProbeSet, Relation

__all__ = ["Fact", "ProbeSet", "Relation"]
