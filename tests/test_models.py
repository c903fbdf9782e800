"""The model zoo: seeded and well-scaled tiny presets, ONNX export checked against ONNX Runtime, the paper
structures (ASPP rates, strides, receptive field), the FLOP counter, the post-processing steps, the registry.

Standard presets are only built on the meta device (structure and parameter counts, no weights, no forward).
"""

import functools
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from atrous.models import MODELS, ModelPreset, ZooModel, count_flops, get_model
from atrous.models.backbones import Bottleneck
from atrous.models.fcis import assemble_rois
from atrous.models.flops import count_params
from atrous.models.instancefcn import assemble_instances
from atrous.models.registry import register
from atrous.models.wavenet import mu_law_encode
from atrous.pipeline.errors import UnknownNameError

TINY_OUTPUTS = {
    "deeplabv3-resnet": [(1, 21, 129, 129)],
    "deeplabv3-mobilenet": [(1, 21, 129, 129)],
    "deeplabv3plus": [(1, 21, 129, 129)],
    "fcn-atrous": [(1, 21, 129, 129)],
    "linknet": [(1, 21, 64, 64)],
    "instancefcn": [(1, 9, 9, 9), (1, 1, 9, 9)],  # k = 3: k^2 score maps at stride 8, objectness logits
    "fcis": [(1, 2 * 3 * 3 * 4, 5, 5)],  # 2 k^2 (C + 1) with k = 3, C + 1 = 4, stride 16
    "wavenet": [(1, 256, 320)],
}
# Ordinary ops (plus the Shape/Slice/Concat and ConstantOfShape/... chains the TorchScript exporter emits for
# Resize sizes and F.pad pads, which constant folding removes).
ALLOWED_OPS = {"Conv", "ConvTranspose", "BatchNormalization", "Relu", "Clip", "Add", "Mul", "Tanh", "Sigmoid",
               "Concat", "Resize", "GlobalAveragePool", "MaxPool", "Pad", "Constant", "Identity", "Shape", "Slice",
               "ConstantOfShape", "Reshape", "Transpose", "Cast"}
NAMES = sorted(TINY_OUTPUTS)


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


def forward(module, inputs):
    with torch.no_grad():
        out = module(*(torch.from_numpy(v) for v in inputs.values()))
    return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))


@functools.cache
def tiny(name):
    """(module, inputs, outputs) of the tiny preset at seed 0, shared by the tests."""
    zoo = get_model(name)
    module, inputs = zoo.create("tiny", seed=0), zoo.example_inputs("tiny", seed=0)
    return module, inputs, forward(module, inputs)


def on_meta(name, preset="standard", **overrides):
    """The model's module built on the meta device: structure only, no memory, no initialisation."""
    zoo = get_model(name)
    with torch.device("meta"):
        return zoo.factory(**{**zoo.preset(preset).config, **overrides})


# ------------------------------------------------------------------------------------------------- tiny presets

def test_the_zoo_holds_every_family():
    assert set(MODELS) == set(TINY_OUTPUTS)
    for zoo in MODELS.values():
        assert {"tiny", "standard"} <= set(zoo.presets) and zoo.summary


@pytest.mark.parametrize("name", NAMES)
def test_tiny_is_seeded_shaped_and_well_scaled(name):
    zoo = get_model(name)
    module, inputs, outputs = tiny(name)
    spec = zoo.preset("tiny")
    assert list(inputs) == list(spec.inputs)
    assert all(v.dtype == np.float32 and v.shape == spec.inputs[n] for n, v in inputs.items())
    again = zoo.example_inputs("tiny", seed=0)
    assert all(np.array_equal(inputs[n], again[n]) for n in inputs)
    assert not module.training
    assert [o.shape for o in outputs] == TINY_OUTPUTS[name] and len(outputs) == len(spec.outputs)
    for out in outputs:
        assert np.isfinite(out).all()
        assert 1e-2 < out.std() < 1e2, f"{name}: output std {out.std():.3g} is badly scaled"
    same = forward(zoo.create("tiny", seed=0), inputs)
    assert all(np.array_equal(a, b) for a, b in zip(outputs, same))
    other = forward(zoo.create("tiny", seed=1), inputs)
    assert all(rel_l2(b, a) > 1e-2 for a, b in zip(outputs, other))


@pytest.mark.parametrize("name", NAMES)
def test_tiny_exports_to_onnx_and_onnxruntime_agrees(name, tmp_path):
    spec = get_model(name).preset("tiny")
    module, inputs, outputs = tiny(name)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(torch.from_numpy(v) for v in inputs.values()), str(path), dynamo=False,
                          opset_version=17, input_names=list(spec.inputs), output_names=list(spec.outputs))
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == list(spec.inputs)
    assert [o.name for o in graph.graph.output] == list(spec.outputs)
    assert {n.op_type for n in graph.graph.node} <= ALLOWED_OPS
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(spec.outputs), inputs)
    for name_, ref, out in zip(spec.outputs, outputs, got):
        assert out.shape == ref.shape
        assert rel_l2(out, ref) < 1e-4, f"{name}.{name_}: relative L2 {rel_l2(out, ref):.2e}"


def test_batchnorm_statistics_are_perturbed_and_residual_branches_damped():
    module = tiny("deeplabv3-resnet")[0]
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    means = torch.cat([m.running_mean for m in norms])
    variances = torch.cat([m.running_var for m in norms])
    assert 0.05 < means.std() < 0.2 and variances.min() >= 0.5 and variances.max() <= 1.5
    assert not torch.allclose(torch.cat([m.bias for m in norms]), torch.zeros(1))
    closing = [b.conv3[1].weight for b in module.modules() if isinstance(b, Bottleneck)]
    assert all(0.1 <= w.min() and w.max() <= 0.3 for w in closing)


# ---------------------------------------------------------------------------------------------------- structure

def _dilations(stage):
    return [block.conv2[0].dilation[0] for block in stage]


def test_deeplabv3_aspp_rates_and_atrous_backbone():
    os16 = on_meta("deeplabv3-resnet")
    assert os16.aspp.rates == (6, 12, 18)
    atrous = [b[0] for b in os16.aspp.branches[1:]]
    assert [(c.kernel_size, c.dilation[0], c.padding[0]) for c in atrous] == [((3, 3), r, r) for r in (6, 12, 18)]
    assert os16.aspp.branches[0][0].kernel_size == (1, 1)
    assert isinstance(os16.aspp.pooling.pool, nn.AdaptiveAvgPool2d) and os16.aspp.pooling.pool.output_size == 1
    assert os16.aspp.project[0].in_channels == 5 * 256 and os16.classifier.out_channels == 21
    stages = os16.backbone.stages
    assert [len(s) for s in stages] == [3, 4, 6, 3] and os16.backbone.high_channels == 2048
    assert stages[2][0].conv2[0].stride == (2, 2) and stages[3][0].conv2[0].stride == (1, 1)
    assert _dilations(stages[3]) == [2, 4, 8]  # rate 2 x multi-grid (1, 2, 4)

    os8 = on_meta("deeplabv3-resnet", output_stride=8)
    assert os8.aspp.rates == (12, 24, 36)
    assert [b[0].dilation[0] for b in os8.aspp.branches[1:]] == [12, 24, 36]
    os8_stages = os8.backbone.stages
    assert os8_stages[1][0].conv2[0].stride == (2, 2) and os8_stages[2][0].conv2[0].stride == (1, 1)
    assert _dilations(os8_stages[2]) == [1, 2, 2, 2, 2, 2]
    assert _dilations(os8_stages[3]) == [4, 8, 16]

    mobile = on_meta("deeplabv3-mobilenet")
    assert mobile.aspp.rates == (6, 12, 18) and mobile.backbone.high_channels == 320
    depthwise = [m for m in mobile.backbone.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.dilation[0] for m in depthwise[-4:]] == [1, 2, 2, 2]  # 160-channel stage and 320 at rate 2


@pytest.mark.parametrize("name", ["deeplabv3-resnet", "deeplabv3-mobilenet", "deeplabv3plus"])
def test_deeplab_features_are_at_stride_4_and_16(name):
    module, inputs, _ = tiny(name)
    with torch.no_grad():
        low, high = module.backbone(torch.from_numpy(inputs["image"]))
    assert low.shape[-2:] == (33, 33) and high.shape[-2:] == (9, 9)  # 129 -> 33 (stride 4) -> 9 (stride 16)


def test_deeplabv3plus_decoder_and_fcn_fc6():
    plus = on_meta("deeplabv3plus")
    assert plus.decoder.reduce[0].out_channels == 48
    assert [c[0].in_channels for c in plus.decoder.refine] == [256 + 48, 256]
    assert [c[0].kernel_size for c in plus.decoder.refine] == [(3, 3), (3, 3)]
    fcn = on_meta("fcn-atrous")
    fc6 = fcn.fc6[0]
    assert (fc6.kernel_size, fc6.dilation, fc6.out_channels) == ((3, 3), (12, 12), 1024)
    convs = [m for m in fcn.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and [c.dilation[0] for c in convs[-3:]] == [2, 2, 2]
    pools = [m for m in fcn.backbone.modules() if isinstance(m, nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]


def test_standard_parameter_counts_and_widths():
    assert 38e6 < count_params(on_meta("deeplabv3-resnet")) < 41e6  # ResNet-50 (23.5M) + ASPP head
    assert 11.4e6 < count_params(on_meta("linknet")) < 11.7e6  # paper: 11.5M
    fcis = on_meta("fcis")
    assert fcis.ps_scores.out_channels == 2 * 7 * 7 * 81 and fcis.reduce[0].out_channels == 1024
    assert [len(s) for s in fcis.backbone.stages] == [3, 4, 23, 3]
    assert _dilations(fcis.backbone.stages[3]) == [1, 2, 2]
    inst = on_meta("instancefcn")
    assert inst.score_branch[-1].out_channels == 25 and inst.objectness_branch[-1].out_channels == 1


def test_linknet_links_and_input_size_check():
    module, inputs, _ = tiny("linknet")
    feats = module.encoder.features(torch.from_numpy(inputs["image"]))
    assert [f.shape[-1] for f in feats] == [16, 16, 8, 4, 2]  # initial block, encoder 1 (stride 1), 2, 3, 4
    with pytest.raises(ValueError, match="divisible by 32"):
        module(torch.zeros(1, 3, 48, 48))


def test_wavenet_receptive_field_is_causal_and_exact():
    assert on_meta("wavenet").receptive_field == 2 + 3 * 1023
    module, inputs, _ = tiny("wavenet")
    field = module.receptive_field
    assert field == 1 + 1 + (1 + 2 + 4 + 8)
    audio = torch.from_numpy(inputs["audio"]).requires_grad_()
    t = 200
    module(audio)[0, :, t].sum().backward()
    reached = torch.nonzero(audio.grad.abs().sum(1)[0]).flatten().tolist()
    assert reached == list(range(t - field + 1, t + 1))


def test_wavenet_inputs_are_one_hot_mu_law():
    assert mu_law_encode(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    x = 0.5
    expected = math.floor((math.log1p(255 * x) / math.log1p(255) + 1) / 2 * 255 + 0.5)
    assert mu_law_encode(np.array([x]))[0] == expected
    audio = tiny("wavenet")[1]["audio"]
    assert set(np.unique(audio)) == {0.0, 1.0} and (audio.sum(axis=1) == 1).all()
    assert len(np.unique(audio.argmax(axis=1))) > 20


# ------------------------------------------------------------------------------------------------ FLOP counter

@pytest.mark.parametrize("layer, shape, flops", [
    (nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10), 2 * (8 * 10 * 10) * 3 * 9),
    (nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=4), (1, 8, 6, 6), 2 * (16 * 36) * 2 * 9),
    (nn.Conv1d(4, 6, 2, dilation=3), (1, 4, 10), 2 * (6 * 7) * 4 * 2),
    (nn.ConvTranspose2d(4, 6, 2, stride=2), (1, 4, 3, 3), 2 * (4 * 9) * 6 * 4),
    (nn.Linear(5, 7), (2, 5), 2 * (2 * 7) * 5),
])
def test_flop_counter_on_single_layers(layer, shape, flops):
    assert count_flops(layer, {"x": np.zeros(shape, np.float32)}) == flops


def test_flop_and_parameter_counts_of_a_small_stack():
    stack = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    assert count_flops(stack, {"x": np.zeros((1, 3, 10, 10), np.float32)}) == 43200 + 2 * 400 * 8
    assert count_params(stack) == (8 * 27 + 8) + 16 + (4 * 8 + 4)
    assert not any(m._forward_hooks for m in stack.modules())


# -------------------------------------------------------------------------------------------- post-processing

def test_assemble_instances_copies_each_cell_from_its_own_map():
    k = 2
    y, x = np.mgrid[0:4, 0:4]
    maps = np.stack([100 * c + 10 * y + x for c in range(k * k)]).astype(np.float32)  # 100*map + 10*row + col
    masks = assemble_instances(maps[None], [(1, 0)], window_size=3, k=k)
    # 3 pixels per side split 2 cells: [0, 0, 1]; map = 2 * cell_row + cell_col, read at (1 + i, 0 + j)
    assert masks.tolist() == [[[10, 11, 112], [20, 21, 122], [230, 231, 332]]]
    masks = assemble_instances(maps, [(0, 1), (2, 2)], window_size=2, k=k)
    assert masks.tolist() == [[[1, 102], [211, 312]], [[22, 123], [232, 333]]]
    with pytest.raises(ValueError, match="leaves"):
        assemble_instances(maps, [(3, 0)], window_size=2, k=k)


def test_assemble_rois_inside_outside_masks_and_scores():
    k, classes = 2, 2
    maps = np.zeros((classes, 2, k, k, 2, 2))  # [category, inside/outside, cell row, cell col, y, x]
    maps[1, 0, 0, 0, 0, 0] = np.log(3.0)  # category 1, inside, cell (0, 0), read by the RoI's top-left pixel
    maps[1, 0, 0, 0, 1, 1] = 5.0  # same map at (1, 1): only read by a RoI whose cell (0, 0) covers (1, 1)
    maps[1, 1, 1, 1, 1, 1] = 2.0  # category 1, outside, cell (1, 1), read by the full RoI's bottom-right pixel
    masks, probs = assemble_rois(maps.reshape(1, -1, 2, 2), [(0, 0, 2, 2), (1, 1, 2, 2)], k, classes)

    full, corner = masks
    assert full.shape == (2, 2, 2) and corner.shape == (2, 1, 1)
    np.testing.assert_allclose(full[0], 0.5)  # category 0: inside = outside = 0
    sig2 = 1 / (1 + np.exp(2.0))
    np.testing.assert_allclose(full[1], [[0.75, 0.5], [0.5, sig2]])  # softmax(ln 3, 0); softmax(0, 2)
    np.testing.assert_allclose(corner[1], [[1 / (1 + np.exp(-5.0))]])
    # detection: per-pixel max(inside, outside) averaged over the RoI, softmax over categories
    full_score = (np.log(3.0) + 2.0) / 4
    np.testing.assert_allclose(probs[0], [1 / (1 + np.exp(full_score)), 1 / (1 + np.exp(-full_score))])
    np.testing.assert_allclose(probs[1], [1 / (1 + np.exp(5.0)), 1 / (1 + np.exp(-5.0))])
    assert probs.argmax(axis=1).tolist() == [1, 1]
    with pytest.raises(ValueError):
        assemble_rois(maps.reshape(-1, 2, 2), [(0, 0, 3, 2)], k, classes)


# ---------------------------------------------------------------------------------------------------- registry

def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        get_model("nope")
    assert err.value.kind == "model" and err.value.valid == sorted(MODELS)
    assert all(name in str(err.value) for name in MODELS)
    with pytest.raises(UnknownNameError, match="tiny"):
        get_model("wavenet").create("huge")


def test_registering_a_duplicate_or_incomplete_model_is_refused():
    before = dict(MODELS)
    with pytest.raises(ValueError, match="already registered"):
        register(get_model("linknet"))
    incomplete = ZooModel("incomplete", "x", nn.Identity, {"tiny": ModelPreset({}, {"x": (1,)}, ("y",))})
    with pytest.raises(ValueError, match="standard"):
        register(incomplete)
    assert MODELS == before
