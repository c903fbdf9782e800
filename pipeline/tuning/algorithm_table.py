"""The direct-vs-Winograd table of a device's tuning database, and the cost model for convs it has not measured.

Each wide 3x3 conv of a CPU model can be computed directly or as Winograd F(2x2)/F(4x4) (passes/winograd.py).
``atrous tune`` measures the alternatives on the device (tuning/algorithms.py) into ``algorithms.json`` beside
the database's records; ``compile`` reads the choice from here (``winograd="auto"``), and a conv the table lacks
gets the cost model below, which is also what an untuned build (no database) uses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import tvm

from atrous.pipeline.passes.winograd import TRANSFORMS, Conv, products_tile, tile_counts

TABLE = "algorithms.json"
DIRECT = "direct"
MARGIN = 1.05  # Winograd rounds differently from the direct sum: choose it only when measurably faster


def alternatives(conv: Conv) -> list[str]:
    """What a conv can be computed as: directly, or as F(m x m, 3 x 3) for each tile that fits its map."""
    return [DIRECT] + [f"winograd{m}" for m in sorted(TRANSFORMS) if conv.fits(m)]


def tile_of(name: str) -> int | None:
    return None if name == DIRECT else int(name.removeprefix("winograd"))


# --- the cost model: convs the database has not measured ------------------------------------------------------
# Fitted to the znver3 table (make algorithms-host, targets/tuning/host/znver3/algorithms.json): direct time over
# F(4x4) time was 1.3x-3.9x for every conv with C*K/(C+K) >= 80 (128->256 and wider) whose tiles save at least 2x
# of the multiplications; 0.95x-1.66x for 64-128 channels (a win only on maps of 129x129); 0.61x-1.05x for 64->64;
# 0.55x for 512 channels at rate 4 on 17x17 (each phase a 4x4 map: 0.75x the multiplications after rounding up).
# The transforms cost per tile in proportion to C + K; the products save in proportion to C * K.
MIN_SAVING = 2.0
WIDE = 80  # C*K/(C+K) from which F(4x4) pays on any map its tiles fit
MEDIUM, LARGE_MAP = 40, 8000  # ... and from which it pays on maps of at least this many outputs


def multiply_saving(conv: Conv, m: int, target) -> float:
    """Multiplications of the direct conv over those of the F(m x m) products, with the pass's tiles (rounded up
    per phase, and to whole register tiles of the products' schedule)."""
    rows, cols = tile_counts(conv.out_h, conv.out_w, conv.dilation, m, conv.batch,
                             products_tile(target, conv.out_channels))
    tiles = conv.dilation[0] * conv.dilation[1] * conv.batch * rows * cols
    return 9 * conv.batch * conv.out_h * conv.out_w / ((m + 2) ** 2 * tiles)


def cost_model(conv: Conv, target) -> int | None:
    """F(4x4) for convs wide enough for their map whose tiles waste little; otherwise direct."""
    if not conv.fits(4) or multiply_saving(conv, 4, target) < MIN_SAVING:
        return None
    width = conv.in_channels * conv.out_channels / (conv.in_channels + conv.out_channels)
    large = conv.out_h * conv.out_w >= LARGE_MAP
    return 4 if width >= WIDE or (width >= MEDIUM and large) else None


# The blocked layout's Winograd (passes/blocked_winograd.py) has cheaper transforms (vectorised over channel
# blocks, no layout copies) and tiles rounded per phase only. Measured on znver4, 2 threads, two 3x3 convs in a row
# (the second dilated) blocked F(4x4) against blocked direct: 256ch 33x33 1.5x (AVX-512) / 2.2x (AVX2 build),
# 512ch 17x17 2.3x / 2.1x, 128ch 65x65 3.2x / 2.3x, 64ch 33x33 1.5x / 3.4x, 64ch 65x65 1.1x / 0.85x, 32ch
# 33x33 2.0x / 1.4x (single runs on a shared machine: a guess for other CPUs, which `atrous tune` replaces).
BLOCKED_WIDTH = 32  # C*K/(C+K) from which blocked F(4x4) is taken untuned (64 -> 64 and wider)


def blocked_cost_model(conv: Conv, target) -> int | None:
    """F(4x4) for blocked convs at least 64 wide (C*K/(C+K) >= 32) whose tiles save at least 2x."""
    from atrous.pipeline.passes.blocked_winograd import fits, tiles

    if not fits((conv.out_h, conv.out_w), conv.dilation, 4):
        return None
    rows, cols = tiles(conv.out_h, conv.out_w, conv.dilation, 4)
    saving = 9 * conv.out_h * conv.out_w / (36 * conv.dilation[0] * conv.dilation[1] * rows * cols)
    width = conv.in_channels * conv.out_channels / (conv.in_channels + conv.out_channels)
    return 4 if saving >= MIN_SAVING and width >= BLOCKED_WIDTH else None


# --- the measured table ---------------------------------------------------------------------------------------
@dataclass
class Table:
    """{conv key: {alternative: seconds or None (failed), "choice": alternative}} of one device."""

    convs: dict = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path | None) -> Table:
        path = Path(directory) / TABLE if directory is not None else None
        return cls(json.loads(path.read_text())["convs"]) if path is not None and path.is_file() else cls()

    def save(self, directory: Path) -> None:
        path = Path(directory) / TABLE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"convs": self.convs}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def chooser(self, blocked: bool = True):
        """The Winograd pass's ``choose``: the measured choice, else the cost model of the layout."""
        model = blocked_cost_model if blocked else cost_model

        def choose(conv: Conv, target) -> int | None:
            entry = self.convs.get(conv.key())
            return tile_of(entry["choice"]) if entry else model(conv, target)
        return choose


def choice(times: dict) -> str:
    """The fastest alternative; Winograd only when at least MARGIN faster than direct."""
    timed = {name: s for name, s in times.items() if s is not None}
    if DIRECT not in timed:
        return min(timed, key=timed.get) if timed else DIRECT
    best = min(timed, key=timed.get)
    return best if best == DIRECT or timed[best] * MARGIN <= timed[DIRECT] else DIRECT


def table_text(entries: dict) -> str:
    """The measured alternatives of each conv, in milliseconds, and the choice."""
    names = [DIRECT] + [f"winograd{m}" for m in sorted(TRANSFORMS)]
    lines = [f"{'conv (NxCxHxW->K rate pad)':<40} " + " ".join(f"{n:>10}" for n in names) + "  choice"]
    for key, entry in entries.items():
        cells = [f"{1e3 * entry[n]:10.3f}" if entry.get(n) else f"{'-':>10}" for n in names]
        lines.append(f"{key:<40} " + " ".join(cells) + f"  {entry['choice']}")
    return "\n".join(lines)


def summary(mod: tvm.IRModule, database: Path | None) -> dict:
    """What the Winograd pass did to a lowered module's convs: {"F(4x4)": n, "F(2x2)": n, "direct": n,
    "measured": how many of those choices came from the database's measurements}."""
    from atrous.pipeline.passes.winograd import DECISIONS

    decisions = [str(d).rsplit(": ", 1) for d in (mod.attrs or {}).get(DECISIONS, [])]
    measured = Table.load(database).convs
    counts: dict = {}
    for _, m in decisions:
        name = "direct" if m == "0" else f"F({m}x{m})"
        counts[name] = counts.get(name, 0) + 1
    counts["measured"] = sum(1 for key, _ in decisions if key in measured)
    return counts if decisions else {}


def summary_text(counts: dict) -> str:
    """One line for compile's report."""
    if not counts:
        return "winograd: no 3x3 conv it applies to"
    convs = sum(v for k, v in counts.items() if k != "measured")
    rewritten = ", ".join(f"{v} as {k}" for k, v in sorted(counts.items()) if k.startswith("F("))
    return (f"winograd: {rewritten or 'none'} of {convs} 3x3 convs it applies to "
            f"({counts['measured']} chosen by measurement, {convs - counts['measured']} by the cost model)")
