"""lightnets.analysis: the papers' worked examples (PAPERS.md), reproduced by profiling real modules, and the
internal consistency of profiles (rows sum to totals, FlopCounterMode agreement, scaling, file formats)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lightnets
from lightnets.analysis import (
    conv_macs,
    conv_params,
    count_macs,
    count_params,
    mac_lower_bound,
    pointwise_mac,
    profile,
)
from lightnets.models.layers import ChannelShuffle, ConvNormAct, SqueezeExcite, channel_shuffle


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Counting needs no parallel kernels; one thread avoids OpenMP spinning on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plain_conv(cin: int, cout: int, k: int, groups: int = 1) -> nn.Module:
    """A bare convolution (no norm, no activation, no bias), as the papers' formulas count it."""
    return ConvNormAct(cin, cout, k, groups=groups, norm_layer=None, act_layer=None, bias=False)


def separable(cin: int, cout: int, k: int = 3) -> nn.Module:
    return nn.Sequential(plain_conv(cin, cin, k, groups=cin), plain_conv(cin, cout, 1))


class TinyNet(nn.Module):
    """Every kind of work the families do: conv-BN-act, depthwise, SE, channel shuffle (module and functional),
    a residual add, a concat, a split, pooling and a linear head."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, width, 3, stride=2)
        self.dw = ConvNormAct(width, width, 3, groups=width, act_layer=None)
        self.se = SqueezeExcite(width, 8)
        self.pw = ConvNormAct(width, width, 1, groups=2, act_layer=nn.Hardswish)
        self.shuffle = ChannelShuffle(2)
        self.down = ConvNormAct(width, 2 * width, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.shuffle(self.pw(self.se(self.dw(x))))
        a, b = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat([b, a], dim=1), 2)
        return self.down(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))


class ConvOnly(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(ConvNormAct(3, 8, 3, stride=2), separable(8, 16), ConvNormAct(16, 16, 3, stride=2))


# ---------------------------------------------------------------------------------------------------------
# The papers' worked examples (PAPERS.md), by formula and by profiling real modules
# ---------------------------------------------------------------------------------------------------------


def test_formulas_56x56x16_to_32() -> None:
    # PAPERS.md "Formulas": 56x56x16 -> 32 channels, 3x3
    standard = conv_macs(16, 32, 3, 56)
    dw_sep = conv_macs(16, 16, 3, 56, groups=16) + conv_macs(16, 32, 1, 56)
    assert standard == 14_450_688
    assert dw_sep == 3 * 3 * 16 * 56 * 56 + 16 * 32 * 56 * 56 == 2_057_216
    assert dw_sep / standard == pytest.approx(1 / 32 + 1 / 9)  # 1/N + 1/D_K^2
    assert conv_params(16, 32, 3) == 3 * 3 * 16 * 32
    assert conv_params(16, 16, 3, groups=16) == 3 * 3 * 16
    assert conv_params(16, 32, 1, bias=True) == 16 * 32 + 32


@pytest.mark.parametrize(
    ("module", "expected_macs"),
    [(plain_conv(16, 32, 3), 14_450_688), (separable(16, 32), 2_057_216)],
    ids=["standard", "depthwise_separable"],
)
def test_profile_56x56x16_to_32(module: nn.Module, expected_macs: int) -> None:
    prof = profile(module, input_size=56)
    assert prof.totals.macs == expected_macs == count_macs(module, 56)
    assert prof.rows[-1].output_shape == (1, 32, 56, 56)


# MobileNetV1 Table 3: one 3x3 layer, M = N = 512 at 14x14 (MAdds in M, params in M, as printed)
TABLE3 = [
    ("standard", 512, 14, False, 462, 2.36),
    ("depthwise_separable", 512, 14, True, 52.3, 0.27),
    ("alpha_0.75", 384, 14, True, 29.6, 0.15),
    ("alpha_0.75_rho_0.714", 384, round(14 * 0.714), True, 15.1, 0.15),
]


@pytest.mark.parametrize("row", TABLE3, ids=[r[0] for r in TABLE3])
def test_mobilenet_v1_table3(row: tuple) -> None:
    _, channels, size, is_separable, madds_m, params_m = row
    module = separable(channels, channels) if is_separable else plain_conv(channels, channels, 3)
    prof = profile(module, input_size=size)
    decimals = 0 if madds_m >= 100 else 1  # the paper's printed precision
    assert round(prof.totals.macs / 1e6, decimals) == madds_m
    assert round(prof.totals.params / 1e6, 2) == params_m
    if is_separable:
        depthwise = conv_macs(channels, channels, 3, size, groups=channels)
        expected = depthwise + conv_macs(channels, channels, 1, size)
    else:
        expected = conv_macs(channels, channels, 3, size)
    assert prof.totals.macs == expected
    assert prof.totals.params == count_params(module)


# ShuffleNetV2 Sec. 2, G1: 1x1 convs at 56x56 with about the same B, different c1:c2 (B and MAC in M)
G1 = [(128, 128, 51.4, 0.819), (90, 180, 50.8, 0.863), (52, 312, 50.9, 1.158), (36, 432, 48.8, 1.483)]
# G2: group convs at fixed B (c = c1 = c2), MAC in M
G2 = [(1, 128, 0.819), (2, 180, 1.145), (4, 256, 1.622), (8, 360, 2.274)]


@pytest.mark.parametrize(("c1", "c2", "b_m", "mac_m"), G1)
def test_g1_memory_access_cost(c1: int, c2: int, b_m: float, mac_m: float) -> None:
    b = conv_macs(c1, c2, 1, 56)
    mac = pointwise_mac(56, 56, c1, c2)
    assert round(b / 1e6, 1) == b_m
    assert round(mac / 1e6, 3) == mac_m
    # the same numbers from profiling a real 1x1 conv
    prof = profile(nn.Conv2d(c1, c2, 1, bias=False), input_size=56)
    assert prof.totals.macs == b
    assert prof.totals.memory_access_cost == mac
    assert prof.totals.memory_access_cost_bytes == 4 * mac


@pytest.mark.parametrize(("groups", "c", "mac_m"), G2)
def test_g2_memory_access_cost(groups: int, c: int, mac_m: float) -> None:
    mac = pointwise_mac(56, 56, c, c, groups=groups)
    assert round(mac / 1e6, 3) == mac_m
    b = conv_macs(c, c, 1, 56, groups=groups)
    assert b == pytest.approx(56 * 56 * 128 * 128, rel=0.02)  # "at fixed FLOPs"
    prof = profile(plain_conv(c, c, 1, groups=groups), input_size=56)
    assert (prof.totals.macs, prof.totals.memory_access_cost) == (b, mac)


def test_g2_more_groups_cost_more_memory_access() -> None:
    macs = [pointwise_mac(56, 56, c, c, groups=g) for g, c, _ in G2]
    assert macs == sorted(macs) and len(set(macs)) == len(macs)


def test_mac_lower_bound() -> None:
    h = w = 56
    for c1, c2 in [(c1, c2) for c1, c2, *_ in G1] + [(7, 300), (300, 7), (64, 65), (1, 1)]:
        b = h * w * c1 * c2
        bound = mac_lower_bound(h, w, b)
        mac = pointwise_mac(h, w, c1, c2)
        if c1 == c2:
            assert mac == pytest.approx(bound, rel=1e-12)
        else:
            assert mac > bound
    # the bound is B's function only: at c1 = c2 = sqrt(B / hw) it is met exactly
    assert mac_lower_bound(h, w, h * w * 128 * 128) == pytest.approx(819_200)


def test_formula_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="groups"):
        pointwise_mac(56, 56, 30, 64, groups=4)
    with pytest.raises(ValueError, match="groups"):
        conv_macs(16, 32, 3, 56, groups=0)
    with pytest.raises(ValueError, match="kernel_size"):
        conv_params(16, 32, (3, 3, 3))


# ---------------------------------------------------------------------------------------------------------
# Profile consistency
# ---------------------------------------------------------------------------------------------------------

SUM_FIELDS = [
    "params",
    "macs",
    "flops",
    "activation_elements",
    "activation_bytes",
    "memory_access_cost",
    "memory_access_cost_bytes",
]


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


def test_rows_sum_to_totals(tiny: nn.Module) -> None:
    prof = profile(tiny, input_size=(40, 56))
    for f in SUM_FIELDS:
        assert sum(getattr(r, f) for r in prof.rows) == getattr(prof.totals, f), f
    assert prof.totals.params == count_params(tiny)
    assert prof.totals.macs == count_macs(tiny, (40, 56)) > 0
    assert prof.input_shape == (1, 3, 40, 56)
    assert prof.row("fc").output_shape == (1, 10)
    assert prof.row("down.0").output_shape == (1, 32, 10, 14)


def test_flops_are_twice_macs(tiny: nn.Module) -> None:
    prof = profile(tiny, input_size=32)
    assert prof.totals.flops == 2 * prof.totals.macs
    assert all(r.flops == 2 * r.macs for r in prof.rows)


def test_per_layer_macs_agree_with_flop_counter_mode(tiny: nn.Module) -> None:
    prof = profile(tiny, input_size=48)
    tiny.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tiny(torch.zeros(1, 3, 48, 48))
    per_module = counter.get_flop_counts()
    leaf_rows = [r for r in prof.rows if r.is_leaf]
    assert {r.name for r in leaf_rows if r.macs} == {
        "stem.0", "dw.0", "se.fc1", "se.fc2", "pw.0", "down.0", "fc",
    }  # fmt: skip
    for r in leaf_rows:
        assert r.flops == sum(per_module.get(f"TinyNet.{r.name}", {}).values()), r.name
    assert prof.totals.flops == counter.get_total_flops()


def test_rows_cover_containers_own_ops(tiny: nn.Module) -> None:
    prof = profile(tiny, input_size=32)
    root = prof.row("(root)")  # the residual add, chunk, cat and functional shuffle run in TinyNet.forward*
    assert not root.is_leaf and root.macs == 0 and root.memory_access_cost > 0
    ops = [o.op for o in prof.ops if o.module == "(root)"]
    assert {"add", "split", "cat", "clone"} <= set(ops)
    # modules that do no work get no row: nn.Identity-like views and the eval-mode dropout of nothing
    assert all(r.memory_access_cost > 0 or r.params > 0 for r in prof.rows)


def test_macs_scale_with_square_of_resolution(tiny: nn.Module) -> None:
    conv = ConvOnly()
    assert profile(conv, input_size=64).totals.macs == 4 * profile(conv, input_size=32).totals.macs
    # with a linear head (resolution-independent) the ratio is close to, and below, 4
    ratio = profile(tiny, input_size=128).totals.macs / profile(tiny, input_size=64).totals.macs
    assert 3.9 < ratio < 4.0


def test_batch_size_scales_linearly(tiny: nn.Module) -> None:
    p1, p2, p3 = (profile(tiny, input_size=32, batch_size=b) for b in (1, 2, 3))
    assert p3.totals.macs == 3 * p1.totals.macs
    assert p3.totals.activation_elements == 3 * p1.totals.activation_elements
    assert p3.totals.peak_activation_elements == 3 * p1.totals.peak_activation_elements
    # memory access cost is (activation traffic) x batch + weight traffic, which is read once per op
    mac = [p.totals.memory_access_cost for p in (p1, p2, p3)]
    assert mac[2] - mac[1] == mac[1] - mac[0] < mac[0]
    assert p3.totals.params == p1.totals.params
    assert p3.input_shape[0] == 3 and p3.row("fc").output_shape == (3, 10)


def test_memory_access_cost_rules() -> None:
    n, c, hw = 2, 8, 6 * 6
    elems = n * c * hw

    def mac_of(module: nn.Module) -> int:
        return profile(module, input_size=6, batch_size=n, in_chans=c).totals.memory_access_cost

    # elementwise, in place or not, pooling and shuffle: inputs + outputs
    assert mac_of(nn.ReLU()) == 2 * elems
    assert mac_of(nn.ReLU(inplace=True)) == 2 * elems
    assert mac_of(nn.Hardswish()) == 2 * elems
    assert mac_of(ChannelShuffle(2)) == 2 * elems
    assert mac_of(nn.MaxPool2d(3, 1, 1)) == 2 * elems  # the CPU kernel's argmax indices are not counted
    assert mac_of(nn.AdaptiveAvgPool2d(1)) == elems + n * c
    # views move nothing
    assert mac_of(nn.Flatten()) == 0
    # batch norm: input + output + weight, bias, running mean and var
    assert mac_of(nn.BatchNorm2d(c)) == 2 * elems + 4 * c
    # conv with bias: input + output + weight + bias
    assert mac_of(nn.Conv2d(c, 4, 1)) == elems + n * 4 * hw + c * 4 + 4
    # linear: input + output + weight + bias
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 5))
    assert profile(head, 6, batch_size=n, in_chans=c).row("2").memory_access_cost == n * c + n * 5 + c * 5 + 5


def test_activation_memory_definitions() -> None:
    n = 4 * 5 * 5

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.ReLU(), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.b(self.a(x))

    chain = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU())
    p = profile(chain, 5, in_chans=4)
    assert p.totals.activation_elements == 3 * n  # every new tensor, the input not included
    assert p.totals.peak_activation_elements == 2 * n  # each freed after its last use
    p = profile(nn.Sequential(nn.ReLU(inplace=True), nn.ReLU(inplace=True)), 5, in_chans=4)
    assert p.totals.activation_elements == 0  # in-place ops create nothing
    assert p.totals.peak_activation_elements == n
    p = profile(Residual(), 5, in_chans=4)
    assert p.totals.activation_elements == 3 * n
    assert p.totals.peak_activation_elements == 3 * n  # the input stays live until the add


def test_dtype_sets_bytes(tiny: nn.Module) -> None:
    p32 = profile(tiny, input_size=32)
    p16 = profile(tiny, input_size=32, dtype=torch.float16)
    assert (p32.bytes_per_element, p16.bytes_per_element) == (4, 2)
    assert p16.totals.memory_access_cost == p32.totals.memory_access_cost
    assert p16.totals.memory_access_cost_bytes * 2 == p32.totals.memory_access_cost_bytes
    assert p16.totals.activation_bytes == 2 * p16.totals.activation_elements
    assert p16.totals.peak_activation_bytes == 2 * p16.totals.peak_activation_elements
    assert p16.dtype == "float16"


def test_shared_module_counted_once_for_params() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    prof = profile(model, 8)
    assert len([r for r in prof.rows if r.type == "Conv2d"]) == 1
    row = prof.row("0")
    assert row.calls == 2 and row.macs == 2 * conv_macs(4, 4, 3, 8)
    assert prof.totals.params == count_params(model) == conv_params(4, 4, 3, bias=True)


def test_profile_restores_training_mode_and_validates(tiny: nn.Module) -> None:
    tiny.train()
    profile(tiny, 32)
    assert tiny.training
    for bad in [0, -3, (32,), (32, 0), 32.0]:
        with pytest.raises(ValueError, match="input_size"):
            profile(tiny, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        profile(tiny, 32, batch_size=0)
    with pytest.raises(ValueError, match="in_chans"):
        profile(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), 2)
    assert profile(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), 2, in_chans=3).totals.macs == 24


# ---------------------------------------------------------------------------------------------------------
# Output formats
# ---------------------------------------------------------------------------------------------------------


def test_csv_and_json_round_trip(tiny: nn.Module) -> None:
    prof = profile(tiny, input_size=32, batch_size=2)
    rows = list(csv.DictReader(io.StringIO(prof.to_csv())))
    assert rows[-1]["name"] == "total" and len(rows) == len(prof.rows) + 1
    data = json.loads(prof.to_json())
    assert data["totals"] == {k: getattr(prof.totals, k) for k in data["totals"]}
    assert data["input_shape"] == [2, 3, 32, 32] and data["dtype"] == "float32"
    assert len(data["rows"]) == len(prof.rows)
    for f in SUM_FIELDS:
        assert int(rows[-1][f]) == getattr(prof.totals, f) == sum(int(r[f]) for r in rows[:-1])
        assert sum(r[f] for r in data["rows"]) == data["totals"][f]
    assert rows[0]["output_shape"] == "2x16x16x16"
    # totals only
    assert len(list(csv.DictReader(io.StringIO(prof.to_csv(per_layer=False))))) == 1
    assert "rows" not in json.loads(prof.to_json(per_layer=False))
    assert len(json.loads(prof.to_json(include_ops=True))["ops"]) == len(prof.ops)


def test_table_has_units_in_every_numeric_header(tiny: nn.Module) -> None:
    prof = profile(tiny, input_size=32)
    table = prof.to_table()
    header = table.splitlines()[0]
    for unit_header in ["Params (K)", "MACs (M)", "FLOPs (M, 2xMACs)", "Activations (K elem)",
                        "Activations (kB)", "Mem. access (K elem)", "Mem. access (kB)"]:  # fmt: skip
        assert unit_header in header
    assert "stem.0" in table and "(root) (own ops)" in table
    total_line = next(line for line in table.splitlines() if line.startswith("total"))
    assert f"{prof.totals.macs / 1e6:.3f}" in total_line
    assert len(prof.to_table(per_layer=False).splitlines()) == 4  # header, rule, total, footer


# ---------------------------------------------------------------------------------------------------------
# Every registered model
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", lightnets.list_models())
def test_registered_models_profile_consistently(name: str) -> None:
    model = lightnets.create_model(name)
    size = (32, 48)  # small and non-square: the counts are checked for consistency, not against papers
    prof = profile(model, input_size=size)
    assert prof.totals.macs == count_macs(model, size) > 0
    assert prof.totals.params == count_params(model)
    for f in SUM_FIELDS:
        assert sum(getattr(r, f) for r in prof.rows) == getattr(prof.totals, f), f
    assert prof.totals.activation_elements >= prof.totals.peak_activation_elements > 0
    assert prof.totals.memory_access_cost > prof.totals.params + prof.totals.activation_elements


def test_meta_models_are_refused_by_profile_but_counted_by_count_macs() -> None:
    with torch.device("meta"):
        model = ConvOnly()
    assert count_macs(model, 32) == count_macs(ConvOnly(), 32)
    with pytest.raises(ValueError, match="meta"):
        profile(model, 32)
