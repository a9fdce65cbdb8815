"""The Beam generation pipeline: spec -> generate -> score -> filter -> metrics -> sinks.

Beam lives here and only here; models and metrics come from ``kepkreator``.
"""
