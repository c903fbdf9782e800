"""Atrous compilation pipeline: export -> ingest -> optimize -> build -> run -> verify -> bench.

Each stage is a module with plain functions; ``interface`` strings them together; ``cli`` is the command line.
"""

if __name__ != "atrous.pipeline":  # one copy of each module: the installed package is atrous.pipeline
    raise ImportError(f"'{__name__}' is atrous.pipeline: import atrous.pipeline (python -m atrous.pipeline.MODULE)")

from atrous.pipeline.threads import use_threads

# TVM's CPU runtime sizes its thread pool from TVM_NUM_THREADS when the pool starts, else uses half the cores on
# x86: set it to every physical core before anything here can start a pool (a value the user set is kept)
use_threads()
