"""Measuring: a model against its peers side by side (compare.py, suite.py for the zoo), per kernel (profile.py),
layers and 1x1 kernels alone (layers.py, pointwise.py), the FMA peak (peak.py), run memory (memory.py), and the
hot loops of the CPU kernels for other CPUs, statically (hot_loops.py, isa.py)."""
