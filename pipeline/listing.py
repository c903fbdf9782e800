"""``atrous list``: the zoo and the device presets, as tables or JSON rows."""

from __future__ import annotations


def model_rows() -> list[dict]:
    from atrous.models import MODELS, count_flops
    from atrous.models.flops import count_params

    import torch

    rows = []
    for name, zoo in MODELS.items():
        for preset_name, preset in zoo.presets.items():
            with torch.device("meta"):  # structure only: sizes without weights or arithmetic
                module = zoo.factory(**preset.config).eval()
                inputs = {n: torch.empty(shape) for n, shape in preset.inputs.items()}
            rows.append({"model": name, "preset": preset_name, "params_m": count_params(module) / 1e6,
                         "gflops": count_flops(module, inputs) / 1e9,
                         "inputs": {n: list(v.shape) for n, v in inputs.items()}, "summary": zoo.summary})
    return rows


def list_models(as_json: bool = False):
    rows = model_rows()
    if as_json:
        return rows
    lines = [f"{'model':<22} {'preset':<9} {'params':>9} {'GFLOPs':>8}  inputs"]
    for r in rows:
        shapes = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in r["inputs"].items())
        lines.append(f"{r['model']:<22} {r['preset']:<9} {r['params_m']:8.2f}M {r['gflops']:8.2f}  {shapes}")
    lines.append("")
    lines += [f"{name:<22} {zoo.summary}" for name, zoo in _models().items()]
    return "\n".join(lines)


def _models():
    from atrous.models import MODELS

    return MODELS


def list_targets(as_json: bool = False):
    from atrous.targets import TARGETS

    rows = [{"target": p.name, "family": p.family, "status": p.status, "arch": p.runtime_arch,
             "summary": p.summary} for p in TARGETS.values()]
    if as_json:
        return rows
    lines = [f"{'target':<18} {'family':<7} {'status':<8} {'arch':<8} summary"]
    lines += [f"{r['target']:<18} {r['family']:<7} {r['status']:<8} {r['arch']:<8} {r['summary']}" for r in rows]
    return "\n".join(lines)
