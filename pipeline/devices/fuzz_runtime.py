"""libFuzzer harnesses of the on-device runtime's parsers (runtime/fuzz/), built with AddressSanitizer and
UndefinedBehaviorSanitizer: the .npy reader (atrous-run's inputs), the signature a model library carries, and the
RPC server's handshake header.

``python -m atrous.pipeline.devices.fuzz_runtime --seconds N`` (``make fuzz-runtime SECONDS=N``) builds them with
Debian's clang-19 and libFuzzer, replays each seed corpus (runtime/fuzz/corpus/<harness>/), then fuzzes each for
N seconds from it (new inputs go to a scratch corpus, not the repository) and prints executions, coverage and
time. An input that crashes a harness is copied into its seed corpus, where every later run (and make test)
replays it: fix the parser, keep the input.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from atrous.pipeline.devices.runtime_build import RUNTIME_SRC
from atrous.pipeline.errors import ToolchainError

CLANG = "clang++-19"
PACKAGES = "clang-19 libfuzzer-19-dev"
HARNESSES = {  # name -> (harness, the runtime sources it exercises)
    "npy": ("npy_fuzz.cc", ("npy.cc",)),
    "signature": ("signature_fuzz.cc", ("signature.cc",)),
    "handshake": ("handshake_fuzz.cc", ("rpc_handshake.cc",)),
    "elf": ("elf_fuzz.cc", ("elf_check.cc",)),
}
MAX_LEN = {"elf": 1 << 16}  # bytes of an input (4096 for the rest): a small library's headers and section table
FUZZ_DIR = RUNTIME_SRC / "fuzz"


def corpus_dir(name: str) -> Path:
    return FUZZ_DIR / "corpus" / name


def build(out: Path) -> dict[str, Path]:
    """Each harness as an executable in ``out`` (rebuilt when its sources change)."""
    if shutil.which(CLANG) is None:
        raise ToolchainError(f"the runtime's fuzz harnesses are built with {CLANG} and libFuzzer; install them "
                             f"with: sudo apt-get install {PACKAGES}")
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for name, (harness, sources) in HARNESSES.items():
        files = [FUZZ_DIR / harness, *(RUNTIME_SRC / "src" / s for s in sources)]
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
        binary = out / f"{name}_fuzz-{digest}"
        if not binary.exists():
            done = subprocess.run([CLANG, "-std=c++17", "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                                   "-fno-sanitize-recover=all", "-I", str(RUNTIME_SRC / "src"), *map(str, files),
                                   "-o", str(binary)], capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                hint = f" (is {PACKAGES.split()[1]} installed?)" if "fuzzer" in done.stderr else ""
                raise ToolchainError(f"building the {name} fuzz harness failed{hint}: "
                                     f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
        built[name] = binary
    return built


@dataclass
class FuzzResult:
    name: str
    seconds: float
    executions: int
    coverage: int  # libFuzzer's "cov": code edges reached
    corpus: int  # inputs in the scratch corpus at the end
    crashes: list[Path]
    returncode: int
    log: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.crashes


def replay(binary: Path, name: str) -> subprocess.CompletedProcess:
    """Run the harness once on each input of its seed corpus (the regression inputs among them)."""
    inputs = sorted(str(p) for p in corpus_dir(name).iterdir() if p.is_file())
    return subprocess.run([str(binary), *inputs], capture_output=True, text=True, timeout=300)


def fuzz(binary: Path, name: str, seconds: int, work: Path) -> FuzzResult:
    """Fuzz ``name`` for ``seconds`` from its seed corpus; crashing inputs are copied into the seed corpus."""
    scratch = work / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    start = time.monotonic()
    done = subprocess.run([str(binary), str(scratch), str(corpus_dir(name)), f"-max_total_time={seconds}",
                           "-print_final_stats=1", "-rss_limit_mb=2048", "-timeout=10",
                           f"-max_len={MAX_LEN.get(name, 4096)}", f"-artifact_prefix={scratch}/crash-"],
                          capture_output=True, text=True, timeout=seconds + 120)
    elapsed = time.monotonic() - start
    crashes = []
    for found in sorted(scratch.glob("crash-*")) + sorted(scratch.glob("leak-*")) + sorted(scratch.glob("oom-*")):
        kept = corpus_dir(name) / f"regression-{hashlib.sha256(found.read_bytes()).hexdigest()[:12]}"
        shutil.copy2(found, kept)
        crashes.append(kept)
    executions = re.findall(r"stat::number_of_executed_units:\s*(\d+)", done.stderr)
    coverage = re.findall(r"\bcov: (\d+)", done.stderr)
    return FuzzResult(name, elapsed, int(executions[-1]) if executions else 0, int(coverage[-1]) if coverage else 0,
                      sum(1 for p in scratch.iterdir() if p.is_file() and not p.name.startswith(("crash-", "leak-"))),
                      crashes, done.returncode, done.stderr)


def table(results: list[FuzzResult]) -> str:
    lines = [f"{'harness':<10} {'seconds':>8} {'executions':>11} {'exec/s':>8} {'coverage':>9} {'corpus':>7}  result"]
    for r in results:
        rate = r.executions / r.seconds if r.seconds else 0
        kept = ", ".join(p.name for p in r.crashes) or f"exit {r.returncode}"
        status = "ok" if r.ok else f"CRASH, kept as {kept}"
        lines.append(f"{r.name:<10} {r.seconds:8.1f} {r.executions:11d} {rate:8.0f} {r.coverage:9d} {r.corpus:7d}  "
                     f"{status}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m atrous.pipeline.devices.fuzz_runtime",
                                description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=60, help="fuzzing time per harness")
    p.add_argument("--harnesses", default=",".join(HARNESSES), help="comma-separated: " + ", ".join(HARNESSES))
    p.add_argument("--build-dir", default="build", help="root of build outputs (binaries in <root>/runtime-fuzz)")
    args = p.parse_args(argv)
    names = [n for n in args.harnesses.split(",") if n]
    unknown = sorted(set(names) - set(HARNESSES))
    if unknown:
        p.error(f"unknown harness(es) {unknown}; choose from {sorted(HARNESSES)}")
    binaries = build(Path(args.build_dir) / "runtime-fuzz")
    results = []
    with tempfile.TemporaryDirectory(prefix="atrous-fuzz-") as work:
        for name in names:
            replayed = replay(binaries[name], name)
            if replayed.returncode != 0:
                print(f"{name}: an input of the seed corpus crashes the harness:\n{replayed.stderr[-3000:]}",
                      file=sys.stderr)
                return 1
            print(f"fuzzing {name} for {args.seconds} s ...", file=sys.stderr, flush=True)
            results.append(fuzz(binaries[name], name, args.seconds, Path(work)))
    print(table(results))
    for r in results:
        if not r.ok:
            print(f"\n{r.name}: {r.log[-3000:]}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
