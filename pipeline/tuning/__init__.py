"""Tuning: MetaSchedule searches over the rules' design spaces into a device's reviewed database (tune.py), the
database itself (database.py), each kernel's default schedule as its first record (default_record.py), the
builders and runners that measure here or on a board (measure.py), and the direct-vs-Winograd table
(algorithm_table.py, measured by algorithms.py)."""
