"""Atrous compilation pipeline: export -> ingest -> optimize -> build -> run -> verify -> bench.

Each stage is a module with plain functions; ``interface`` strings them together; ``cli`` is the command line.
"""
