"""Stage: package a compiled model with the on-device runtime, golden data and a check script.

    build/<model>/<device>/bundle/          (and bundle.tar.gz beside it, unpacking to <model>-<device>/)
        model.so                            the compiled model (carries its signature)
        bin/atrous-run  bin/atrous-rpc-server
        lib/libatrous_runtime.so  lib/libtvm_runtime.so  lib/libtvm_runtime_extra.so  lib/libtvm_ffi.so
        lib/libtvm_runtime_cuda.so  lib/libcudart.so.13   CUDA models only
        lib/libatrous_vulkan.so             Vulkan models only
        golden/input0.npy ...               seeded inputs, in call order
        golden/expected0.npy ...            PyTorch's outputs for them, in return order
        run.sh                              runs the model on the golden inputs and checks it (exit 1 on mismatch)
        README.txt                          what it is and how to run it

Nothing on the board needs Python or a compiler. A bundle is rebuilt when the model or the runtime changes.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import tarfile
from pathlib import Path

import numpy as np

from atrous.pipeline import artifact as art
from atrous.pipeline.devices.runtime_build import DEVICE_LIBS, RuntimeBuild, build_runtime

STAMP = ".stamp"


def bundle_dir(artifact: art.Artifact) -> Path:
    return artifact.root / "bundle"


def golden_files(meta: art.Meta) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """((input name, relative path), ...), ((output name, relative path), ...) inside a bundle."""
    return ([(s.name, f"golden/input{i}.npy") for i, s in enumerate(meta.inputs)],
            [(s.name, f"golden/expected{i}.npy") for i, s in enumerate(meta.outputs)])


def run_script(meta: art.Meta, tolerance) -> str:
    inputs, expected = golden_files(meta)
    args = [f"--input {shlex.quote(f'{n}={p}')}" for n, p in inputs]
    args += [f"--expect {shlex.quote(f'{n}={p}')}" for n, p in expected]
    return "\n".join([
        "#!/bin/sh",
        f"# {meta.model} compiled for {meta.target}: run it on the golden inputs and compare with PyTorch.",
        "# Usage: ./run.sh [--repeat N] [--threads N]     (more arguments are passed to bin/atrous-run)",
        "# Exit status: 0 outputs match, 1 outputs differ beyond tolerance, 2 bad input or a damaged bundle,",
        "# 3 the run failed.",
        "set -eu",
        'cd "$(dirname "$0")"',
        f"# every file as packed (sha256sum -c {MANIFEST}): a damaged or partial copy is named, nothing runs",
        "if command -v sha256sum >/dev/null; then",
        f"  bad=$(sha256sum -c {MANIFEST} 2>&1 | grep -v ': OK$' || true)",
        '  if [ -n "$bad" ]; then',
        '    echo "run.sh: this bundle is damaged or incomplete (copy it again):" >&2',
        '    echo "$bad" >&2',
        "    exit 2",
        "  fi",
        "else",
        f'  echo "run.sh: no sha256sum here: the bundle\'s files are not checked against {MANIFEST}" >&2',
        "fi",
        "exec ./bin/atrous-run model.so \\",
        *(f"    {a} \\" for a in args),
        f"    --rel-l2 {tolerance.rel_l2:g} --max-abs {tolerance.max_abs:g} \"$@\"",
        "",
    ])


MANIFEST = "SHA256SUMS"


def manifest(root: Path) -> str:
    """``sha256sum``'s format for every regular file of the bundle at ``root`` (links are checked through the
    files they point to), in path order: what run.sh checks before it runs anything."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if rel not in (MANIFEST, STAMP):
            with path.open("rb") as file:  # streamed: a model.so can be hundreds of MB
                lines.append(f"{hashlib.file_digest(file, 'sha256').hexdigest()}  {rel}")
    return "\n".join(lines) + "\n"


def shipped(meta: art.Meta, relative: str) -> bool:
    """Whether a runtime file goes into this model's bundle (a device kind's libraries only with its models)."""
    kind = meta.target_json.get("kind")
    return all(Path(relative).name not in libs for k, libs in DEVICE_LIBS.items() if k != kind)


def _device_needs(meta: art.Meta) -> list[str]:
    """The README's lines on what the device must have besides the bundle (nothing for CPU models)."""
    kind = meta.target_json.get("kind")
    if kind == "cuda":
        return [f"Needs an NVIDIA GPU that runs {meta.target_json['arch']} code and its driver (>= 580, CUDA 13; the",
                "bundle carries libcudart). Without one, ./run.sh says what is missing.", ""]
    if kind == "vulkan":
        return ["Needs a Vulkan 1.1 driver: the loader libvulkan.so.1 and the GPU's ICD (Debian: libvulkan1 and",
                "mesa-vulkan-drivers or the vendor's driver). Without one, ./run.sh says what is missing.", ""]
    return []


def readme(meta: art.Meta, runtime: RuntimeBuild) -> str:
    sizes = {name: size for name, size in runtime.size_bytes().items() if shipped(meta, name)}
    needs = _device_needs(meta)
    lines = [f"{meta.model} for {meta.target} ({runtime.arch}), built by atrous.", "", *needs,
             "Run on the device (no Python or compiler needed there):", "",
             "    ./run.sh              # checks the outputs against PyTorch's",
             "    ./run.sh --repeat 20  # and prints latency", "",
             "Use the model from your own program through the C API in include/atrous/atrous.h (link",
             "lib/libatrous_runtime.so), or run it on your data:", "",
             "    bin/atrous-run model.so --info",
             "    bin/atrous-run model.so --input x.npy --output y.npy", "",
             "Serve it to a TVM RPC client or tracker (remote measurement and tuning):", "",
             "    bin/atrous-rpc-server --port 9090 [--tracker HOST:9190 --key " + meta.target + "]", "",
             "Inputs / outputs:"]
    lines += [f"    input  {s.name}: {s.dtype}{list(s.shape)}" for s in meta.inputs]
    lines += [f"    output {s.name}: {s.dtype}{list(s.shape)}" for s in meta.outputs]
    lines += ["", "Runtime files:"] + [f"    {name:<28} {size / 1e6:6.2f} MB" for name, size in sizes.items()]
    return "\n".join(lines) + "\n"


def make_bundle(artifact: art.Artifact, tolerance, runtime: RuntimeBuild | None = None) -> Path:
    """Build (or reuse) ``artifact``'s bundle and its ``bundle.tar.gz``; returns the bundle directory."""
    meta = artifact.meta()
    runtime = runtime or build_runtime(_runtime_arch(meta), artifact.root.parent.parent)
    final = bundle_dir(artifact)
    stamp = f"{meta.fingerprint} {(runtime.root / 'stamp').read_text()} {tolerance}"
    if (final / STAMP).is_file() and (final / STAMP).read_text() == stamp:
        return final
    with art.staged(final) as stage:
        root = stage.path
        shutil.copy2(artifact.library, root / "model.so")
        for sub in ("bin", "lib", "include"):
            shutil.copytree(runtime.root / sub, root / sub, symlinks=True,
                            ignore=lambda _, names: [n for n in names if not shipped(meta, n)])
        (root / "golden").mkdir()
        inputs, expected = artifact.load_golden()
        names_in, names_out = golden_files(meta)
        for (name, rel), values in ((p, inputs) for p in names_in):
            np.save(root / rel, values[name])
        for (name, rel), values in ((p, expected) for p in names_out):
            np.save(root / rel, values[name])
        (root / "run.sh").write_text(run_script(meta, tolerance))
        (root / "run.sh").chmod(0o755)
        (root / "README.txt").write_text(readme(meta, runtime))
        (root / MANIFEST).write_text(manifest(root))
        (root / STAMP).write_text(stamp)
        stage.commit()
    _tar(final, artifact.root / "bundle.tar.gz", f"{meta.model}-{meta.target}")
    return final


def _runtime_arch(meta: art.Meta) -> str:
    """The CPU the bundle's runtime runs on: the preset's (a Jetson's GPU model has an aarch64 host)."""
    from atrous.targets import TARGETS

    if meta.target in TARGETS:
        return TARGETS[meta.target].runtime_arch
    host = meta.target_json.get("host") or meta.target_json
    return str(host.get("mtriple", "")).split("-")[0] or None


def _tar(directory: Path, path: Path, top: str) -> Path:
    partial = path.with_name(f".{path.name}.partial")
    with tarfile.open(partial, "w:gz") as tar:
        for item in sorted(directory.rglob("*")):
            if item.name != STAMP:
                tar.add(item, arcname=f"{top}/{item.relative_to(directory)}", recursive=False)
    partial.rename(path)
    return path
