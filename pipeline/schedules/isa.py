"""What the CPU kernels need to know about a target's vector unit, read from the target rather than assumed.

A register-blocked conv keeps ``pixels x vectors`` accumulators in vector registers and, per input channel, loads
``vectors`` weight vectors and broadcasts one input value per pixel. Whether that tile fits and keeps the FMA
units busy follows from three numbers of the ISA: fp32 lanes per vector, architectural vector registers, and the
number of independent FMAs in flight (latency x pipes) needed to hide the FMA latency. The first two are facts of
the ISA (LLVM's view of the target); the third differs per core, and the figures below are the vendors' published
latencies, a guess for any core not listed: the tile is a tuning decision (schedules/blocked_conv.py), so the
tuner corrects it on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.target import codegen


@dataclass(frozen=True)
class VectorISA:
    name: str  # "avx512", "avx2", "neon", "sse" or "scalar"
    lanes: int  # fp32 lanes of one vector register
    registers: int  # architectural vector registers
    fmas_in_flight: int  # independent FMAs needed to hide the latency: latency (cycles) x FMA pipes
    # registers a tile must leave free beyond one weight vector per channel vector and one input, found by reading
    # the generated loops (pipeline/bench/hot_loops.py, make bench-isa): with AVX-512, LLVM keeps two broadcasts in
    # flight (14x2 tiles spilled, 13x2 not); NEON's by-element FMA takes four input channels from one register
    # and LLVM keeps the weight vectors of several lanes live (10x2 and 6x4 tiles spilled, 9x2 not)
    reserved: int = 0

    @property
    def block(self) -> int:
        """Channels per block of the blocked activation layout (NCHW{block}c): one vector."""
        return self.lanes


# FMA latency x pipes per core (vendor optimisation guides; a guess elsewhere, refined by tuning)
FMAS_IN_FLIGHT = {"znver3": 8, "znver4": 8, "znver5": 8, "skylake-avx512": 8, "icelake-server": 8,
                  "sapphirerapids": 8, "cortex-a72": 14, "cortex-a76": 8, "cortex-a78": 8, "cortex-a78ae": 8,
                  "neoverse-n1": 8}
DEFAULT_IN_FLIGHT = 8


def isa_of(target) -> VectorISA:
    """The vector ISA a CPU (llvm) target compiles to."""
    if target.kind.name != "llvm":
        raise ValueError(f"not a CPU target: {target.kind.name}")
    mcpu = str(target.attrs.get("mcpu", "generic"))
    in_flight = FMAS_IN_FLIGHT.get(mcpu, DEFAULT_IN_FLIGHT)
    if "aarch64" in str(target.attrs.get("mtriple", "")) or _has(target, "neon"):
        return VectorISA("neon", 4, 32, in_flight, reserved=10)
    if _has(target, "avx512f"):
        return VectorISA("avx512", 16, 32, in_flight, reserved=2)
    if _has(target, "avx2") or _has(target, "avx"):
        return VectorISA("avx2", 8, 16, in_flight)
    if _has(target, "sse2"):
        return VectorISA("sse", 4, 16, in_flight)
    return VectorISA("scalar", 1, 16, in_flight)


def _has(target, feature: str) -> bool:
    return bool(codegen.llvm_cpu_has_features(feature, target))


def tile_limit(isa: VectorISA, vectors: int) -> int:
    """The most output pixels a tile of ``vectors`` channel vectors may hold: accumulators plus the weight vectors
    plus one broadcast register must fit the register file."""
    return max(1, (isa.registers - isa.reserved - vectors - 1) // vectors)


def balanced(width: int, limit: int) -> int:
    """Pixels per tile when ``width`` pixels are cut into as few tiles of at most ``limit`` as possible, evened
    out (33 wide at most 14: 3 tiles of 11, not 14 + 14 + 5)."""
    tiles = -(-width // limit)
    return -(-width // tiles)


def conv_tiles(isa: VectorISA, width: int, channel_blocks: int) -> list[tuple[int, int]]:
    """(pixels, channel vectors) tiles of a blocked conv whose output rows are ``width`` pixels and whose output
    has ``channel_blocks`` channel vectors, the default first (``conv_tile``), then every other tile that fits:
    channel vectors that divide the channels (at most a quarter of the registers) x pixel counts up to what the
    registers hold, each evened out over the row, with at least half the default's accumulators. The tuner's
    choices (schedules/blocked_conv.py)."""
    default = conv_tile(isa, width, channel_blocks)
    tiles = [default]
    for vectors in range(1, isa.registers // 4 + 1):
        if channel_blocks % vectors:
            continue
        for limit in range(2, tile_limit(isa, vectors) + 1):
            tile = (balanced(width, limit), vectors)
            if tile not in tiles and 2 * tile[0] * tile[1] >= default[0] * default[1]:
                tiles.append(tile)
    return tiles


def conv_tile(isa: VectorISA, width: int, channel_blocks: int) -> tuple[int, int]:
    """(pixels, channel vectors) of the default register tile of a blocked conv whose output rows are ``width``
    pixels and whose output has ``channel_blocks`` channel vectors: among the channel-vector counts that divide
    the channels (at most a quarter of the registers), the one whose tile (as many pixels as the registers
    allow, evened out over the row) holds the most accumulators, with at least two vectors where the channels
    allow (with one, every FMA needs a load of its own: 42-62% of peak on AVX2, shared/examples/nchwc-conv); on
    a tie, two vectors. Short rows (ASPP's 5-pixel border bands) thus get more channel vectors."""
    best = None
    for vectors in range(1, isa.registers // 4 + 1):
        if channel_blocks % vectors:
            continue
        pixels = balanced(width, tile_limit(isa, vectors))
        key = (vectors > 1, pixels * vectors, vectors == 2)
        if best is None or key > best[0]:
            best = (key, (pixels, vectors))
    return best[1]


def even_runs(tiles: int, wanted: int) -> int:
    """The fewest runs, at least ``wanted``, that cut ``tiles`` tiles evenly (all of them when none does): how a
    kernel whose natural parallel loop is too short shares a row of tiles out to the cores."""
    return next((d for d in range(1, tiles + 1) if tiles % d == 0 and d >= wanted), tiles)
