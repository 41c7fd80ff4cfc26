"""The guideline lab (ShuffleNetV2 Section 2): configurations have the paper's widths and costs, the G3 and G4
variants have the intended structure, the agreement logic is right, and the lab runs through the CLI.

Golden numbers are PAPERS.md's (Ma et al. 2018, Tables 1-4 and the worked values of Section 2).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lightnets import cli
from lightnets.analysis import count_macs, pointwise_mac, profile
from lightnets.analysis import lab as guidelines
from lightnets.analysis.lab import (
    Bottleneck,
    ParallelFragments,
    SeriesFragments,
    compare_orderings,
    experiment,
)

HW = 56


def _costs(key: str) -> list[tuple[int, int]]:
    out = []
    for cfg in experiment(key).configs:
        totals = profile(cfg.build(), input_size=HW).totals
        out.append((totals.macs, totals.memory_access_cost))
    return out


def test_g1_has_the_papers_widths_flops_and_memory_access_cost():
    exp = experiment("G1")
    assert [c.description for c in exp.configs] == [
        "c1=128, c2=128",
        "c1=90, c2=180",
        "c1=52, c2=312",
        "c1=36, c2=432",
    ]
    # PAPERS.md: per 1x1 conv at 56x56, B = 51.4M / 50.8M / 50.9M / 48.8M and MAC = 0.819M / 0.863M / 1.158M / 1.483M
    paper_b = [51.4e6, 50.8e6, 50.9e6, 48.8e6]
    paper_mac = [0.819e6, 0.863e6, 1.158e6, 1.483e6]
    for (macs, mac), b, m, row in zip(_costs("G1"), paper_b, paper_mac, guidelines.G1_TABLE, strict=True):
        convs = 2 * guidelines.NUM_BLOCKS  # each block: c1 -> c2 -> c1
        assert macs % convs == 0 and mac % convs == 0
        assert macs / convs == pytest.approx(b, abs=0.05e6)
        assert mac / convs == pytest.approx(m, abs=0.0005e6)
        assert mac // convs == pointwise_mac(HW, HW, row.c1, row.c2)
    assert [c.paper_speed for c in exp.configs] == [1480, 1296, 876, 748]


def test_g2_has_the_papers_widths_flops_and_memory_access_cost():
    exp = experiment("G2")
    paper_mac = [0.819e6, 1.145e6, 1.622e6, 2.274e6]  # PAPERS.md: g = 1/2/4/8 at c = 128/180/256/360
    costs = _costs("G2")
    for (macs, mac), m, row in zip(costs, paper_mac, guidelines.G2_TABLE, strict=True):
        layers = guidelines.NUM_BLOCKS
        assert macs == layers * HW * HW * row.channels * row.channels // row.groups
        assert mac / layers == pytest.approx(m, abs=0.0005e6)
    assert max(m for m, _ in costs) / min(m for m, _ in costs) < 1.02  # fixed FLOPs
    assert [c.paper_speed for c in exp.configs] == [2451, 1725, 1026, 634]
    assert [c.paper_speed for c in experiment("G2", "arm").configs] == [40.0, 35.0, 32.9, 27.8]
    arm = [c.description for c in experiment("G2", "arm").configs]
    assert arm[0] == "c=64, g=1" and arm[3].startswith("c=176, g=8")  # the paper's 180 is not divisible by 8
    assert guidelines.group_divisible_width(180, 8) == 176 and guidelines.group_divisible_width(360, 8) == 360


def test_g3_fragments_have_the_intended_structure_and_equal_flops():
    exp = experiment("G3")
    assert [c.label for c in exp.configs] == [
        "1-fragment", "2-fragment-series", "4-fragment-series", "2-fragment-parallel", "4-fragment-parallel",
    ]  # fmt: skip
    assert [c.paper_speed for c in exp.configs] == [2446, 1790, 752, 1537, 691]
    expected = [(SeriesFragments, 1, 128), (SeriesFragments, 2, 91), (SeriesFragments, 4, 64),
                (ParallelFragments, 2, 128), (ParallelFragments, 4, 128)]  # fmt: skip
    for cfg, (kind, fragments, width) in zip(exp.configs, expected, strict=True):
        net = cfg.build()
        assert len(net) == guidelines.NUM_BLOCKS and all(type(b) is kind for b in net)
        convs = [m for m in net[0].modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == fragments and all(c.kernel_size == (1, 1) for c in convs)
        assert convs[0].in_channels == width == cfg.in_channels
        assert net(torch.zeros(1, width, 4, 4)).shape == (1, width, 4, 4)  # blocks keep the width: they stack
    one = count_macs(exp.configs[0].build(), HW)
    for cfg in exp.configs:
        assert count_macs(cfg.build(), HW) == pytest.approx(one, rel=0.02)


def test_parallel_fragments_concatenate_branches_on_the_same_input():
    block = ParallelFragments(8, 4)
    assert [(b.in_channels, b.out_channels) for b in block.branches] == [(8, 2)] * 4
    x = torch.randn(1, 8, 3, 3)
    assert torch.equal(block(x), torch.cat([b(x) for b in block.branches], 1))
    with pytest.raises(ValueError, match="divisible"):
        ParallelFragments(10, 4)


def test_equal_flops_width():
    assert guidelines.equal_flops_width(128, 1) == 128
    assert guidelines.equal_flops_width(128, 2) == 91  # 2 * 91^2 = 16562 is closer to 128^2 than 2 * 90^2
    assert guidelines.equal_flops_width(128, 4) == 64
    assert guidelines.equal_flops_width(64, 2) == 45


def test_g4_bottleneck_variants():
    exp = experiment("G4")
    assert [c.paper_speed for c in exp.configs] == [2427, 2647, 2672, 2842]
    flags = [(True, True), (True, False), (False, True), (False, False)]
    for cfg, (relu, shortcut) in zip(exp.configs, flags, strict=True):
        net = cfg.build()
        assert len(net) == guidelines.NUM_BLOCKS and all(isinstance(b, Bottleneck) for b in net)
        unit = net[0]
        assert (unit.conv1.in_channels, unit.conv1.out_channels) == (32, 8)  # c = 32, bottleneck c / 4
        assert unit.conv2.kernel_size == (3, 3) and unit.conv3.out_channels == 32
        assert (unit.relu, unit.shortcut) == (relu, shortcut)
        assert isinstance(unit.act, nn.ReLU) == relu
        # with the last conv zeroed the unit's output is what the shortcut (and the final ReLU) pass on
        nn.init.zeros_(unit.conv3.weight)
        x = torch.randn(1, 32, 5, 5)
        expected = (x.relu() if relu else x) if shortcut else torch.zeros_like(x)
        assert torch.equal(unit(x), expected)
    costs = _costs("G4")
    assert len({m for m, _ in costs}) == 1  # ReLU and shortcut add no MACs...
    mac = [c for _, c in costs]
    assert mac[0] > mac[1] > mac[3] and mac[0] > mac[2] > mac[3]  # ...but memory access cost


def test_compare_orderings():
    labels = ["a", "b", "c"]
    agree = compare_orderings(labels, [30, 20, 10], [3, 2, 1])
    assert (agree.verdict, agree.concordant, agree.tied, agree.reversed) == ("agrees", 3, 0, [])
    assert agree.paper_fastest_is_fastest and agree.measured_order == ["a", "b", "c"]
    flipped = compare_orderings(labels, [10, 20, 30], [3, 2, 1])
    assert (
        flipped.verdict == "disagrees" and len(flipped.reversed) == 3 and not flipped.paper_fastest_is_fastest
    )
    partly = compare_orderings(labels, [30, 10, 20], [3, 2, 1])
    assert partly.verdict == "partly agrees" and partly.reversed == [("b", "c")]
    tied = compare_orderings(labels, [30, 29.9, 10], [3, 2, 1], relative_noise=[0.01] * 3)
    assert tied.tied == 1 and tied.verdict == "agrees"
    noisy = compare_orderings(labels, [10, 20, 30], [3, 2, 1], relative_noise=[10.0] * 3)
    assert noisy.verdict.startswith("inconclusive")
    assert "reversed" in flipped.sentence() and "a slower than" not in agree.sentence()


def test_quick_lab_runs_every_experiment(tmp_path):
    lab = guidelines.run_guidelines(quick=True, out=tmp_path, threads=1)
    assert [e.key for e in lab.experiments] == ["G1", "G2", "G3", "G4"]
    for e in lab.experiments:
        assert e.input_size == guidelines.QUICK["input_size"] and e.threads == 1
        assert e.configs[0].measured_ratio == 1.0 and e.configs[0].paper_ratio == 1.0
        for c in e.configs:
            assert c.batches_per_s > 0 and c.images_per_s == pytest.approx(c.batches_per_s * e.batch_size)
            assert c.paper_ratio == pytest.approx(c.paper_speed / e.configs[0].paper_speed)
        assert e.agreement.verdict in {
            "agrees",
            "partly agrees",
            "disagrees",
            "inconclusive (all pairs within noise)",
        }
        png = tmp_path / f"guideline_{e.key}_gpu.png"
        assert lab.plots[e.key] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    text = guidelines.format_lab(lab)
    assert "QUICK MODE" in text and "paper GPU (batches/s)" in text and text.count("on this hardware:") == 4
    json.dumps(lab.to_dict())  # serialisable


def test_defaults_are_the_papers_settings():
    import inspect

    params = inspect.signature(guidelines.run_experiment).parameters
    assert params["input_size"].default == 56 and params["batch_size"].default == 1
    assert params["setting"].default == "gpu" and guidelines.NUM_BLOCKS == 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown experiment"):
        experiment("G5")
    with pytest.raises(ValueError, match="setting"):
        experiment("G1", "tpu")
    with pytest.raises(ValueError, match="batch_size"):
        guidelines.run_experiment("G1", batch_size=0)


def test_cli_guidelines_quick(tmp_path, capsys):
    assert (
        cli.main(
            ["guidelines", "--quick", "--experiments", "G2", "g4", "--threads", "1", "--out", str(tmp_path)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "G2: excessive group convolution" in out and "G4 on this hardware:" in out and "G1:" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guideline_G2_gpu.png", "guideline_G4_gpu.png"]
    assert cli.main(["guidelines", "--quick", "--experiments", "G1", "--setting", "arm", "--format", "json",
                     "--out", str(tmp_path)]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["experiments"][0]["configs"][0]["description"] == "c1=32, c2=32"
    assert doc["experiments"][0]["paper_unit"] == "images/s"
    assert cli.main(["guidelines", "--quick", "--experiments", "G9"]) == 2
