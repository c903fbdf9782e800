"""Reading a tuning database: parsed once per process for each version of its files.

A database's JSON (every tuned workload with its constants, and every record) takes seconds to parse: ~4 s for
the committed host database, which every compile on the host reads to apply its records and to count them. Its
files only change when ``atrous tune`` writes them, so a parsed database is kept per directory and reused until
their size or modification time changes. Writers (tuning) open their own instance (``tune.open_database``).
"""

from __future__ import annotations

import json
from pathlib import Path

from tvm.s_tir import meta_schedule as ms

from .errors import AtrousError

RECORDS, WORKLOADS = "database_tuning_record.json", "database_workload.json"
FILES = (WORKLOADS, RECORDS)

_cache: dict[Path, tuple[tuple, ms.database.JSONDatabase]] = {}


def _version(directory: Path) -> tuple:
    stats = [(directory / name).stat() for name in FILES]
    return tuple((s.st_size, s.st_mtime_ns) for s in stats)


def read_database(directory: Path) -> ms.database.JSONDatabase:
    """The database in ``directory`` for reading (records are not to be committed to it)."""
    directory = Path(directory).resolve()
    version = _version(directory)
    cached = _cache.get(directory)
    if cached is None or cached[0] != version:
        check_files(directory)
        cached = (version, ms.database.JSONDatabase(work_dir=str(directory)))
        _cache[directory] = cached
    return cached[1]


def check_files(directory: Path) -> None:
    """Raise AtrousError if a database file has a line that is not a JSON record: TVM's parser crashes the process
    on one (a blank line is enough), and a hand-edited or truncated file should get a message instead."""
    for name in FILES:
        path = Path(directory) / name
        if not path.is_file():
            continue
        with open(path) as lines:
            for number, line in enumerate(lines, 1):
                try:
                    json.loads(line)
                except ValueError:
                    raise AtrousError(f"tuning database {directory}: line {number} of {name} is not a JSON record "
                                      "(edited or cut short?); restore the file (git checkout) or remove the "
                                      "line") from None
