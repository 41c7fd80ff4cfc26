"""lightnets.deploy.bench: rows are well formed and consistent, outputs parse, the plot is a PNG, the CLI runs.

Speed itself is never asserted here (the machine is shared); speed goals live in benchmarks/.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from PIL import Image
from torch import nn

import lightnets
from lightnets import cli
from lightnets.analysis import count_macs, count_params, profile
from lightnets.deploy import bench
from lightnets.registry import create_model

TINY = {"warmup": 1, "min_time_s": 0.0, "repeats": 3, "rounds": 1}
MODEL = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def rows() -> list[bench.BenchRow]:
    return bench.benchmark([MODEL], batch_sizes=(1, 2), input_sizes=(32, (40, 32)), threads=(1,), **TINY)


def test_rows_cover_every_combination_and_are_well_formed(rows):
    assert [(r.batch_size, r.input_h, r.input_w) for r in rows] == [
        (1, 32, 32),
        (2, 32, 32),
        (1, 40, 32),
        (2, 40, 32),
    ]
    for r in rows:
        d = r.as_dict()
        assert tuple(d) == bench.ROW_FIELDS
        assert r.model == MODEL and r.engine == "eager" and r.device == "cpu" and r.threads == 1
        for name, value in d.items():
            if isinstance(value, float | int) and not isinstance(value, bool):
                assert math.isfinite(value) and value > 0, name
        assert r.latency_ms_min <= r.latency_ms_p10 <= r.latency_ms_q1 <= r.latency_ms <= r.latency_ms_q3
        assert r.latency_ms_q3 <= r.latency_ms_p90 <= r.latency_ms_max
        assert r.repeats >= TINY["repeats"]
        assert r.images_per_s == pytest.approx(r.batch_size * 1e3 / r.latency_ms)
        assert r.images_per_s_p10 <= r.images_per_s <= r.images_per_s_p90


def test_rows_carry_the_analysis_costs_per_image(rows):
    model = create_model(MODEL)
    assert rows[0].params == count_params(model)
    for r in rows[::2]:  # the two input sizes (rows 1 and 3 repeat them at batch 2)
        assert r.macs == count_macs(model, (r.input_h, r.input_w))
        assert r.memory_access_cost == profile(model, (r.input_h, r.input_w)).totals.memory_access_cost
    assert rows[2].macs > rows[0].macs  # 40x32 costs more than 32x32
    assert (rows[1].macs, rows[3].memory_access_cost) == (
        rows[0].macs,
        rows[2].memory_access_cost,
    )  # per image


def test_thread_count_is_applied_and_restored():
    before = torch.get_num_threads()
    seen = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return self.conv(x)

    rows = bench.benchmark({"probe": Probe()}, input_sizes=(8,), threads=(1, None), **TINY)
    assert torch.get_num_threads() == before
    assert [r.threads for r in rows] == [1, before]
    assert 1 in seen and before in seen


def test_csv_and_json_parse(rows):
    parsed = list(csv.DictReader(io.StringIO(bench.format_rows(rows, "csv"))))
    assert len(parsed) == len(rows)
    assert tuple(parsed[0]) == bench.ROW_FIELDS
    assert float(parsed[1]["latency_ms"]) == pytest.approx(rows[1].latency_ms)
    assert int(parsed[3]["batch_size"]) == 2

    doc = json.loads(bench.format_rows(rows, "json", env=bench.environment()))
    assert doc["environment"]["torch"] == torch.__version__
    assert [r["input_h"] for r in doc["rows"]] == [32, 32, 40, 40]
    assert doc["rows"][0]["macs"] == rows[0].macs


def test_table_and_markdown_have_units(rows):
    table = bench.format_rows(rows, "table", env=bench.environment())
    assert "latency median (ms)" in table and "throughput (img/s)" in table and "MACs (M/img)" in table
    assert len(table.splitlines()) == 2 + len(rows) + 1
    md = bench.format_rows(rows, "markdown")
    assert md.splitlines()[1].startswith("|---")
    with pytest.raises(ValueError, match="unknown format"):
        bench.format_rows(rows, "xml")


def test_plot_writes_a_png(rows, tmp_path):
    path = bench.plot_rows(rows, tmp_path / "sub" / "latency.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.width > 300 and img.height > 200


def test_timing_summary_and_interleaving():
    t = bench.Timing.from_samples([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (t.min_ms, t.median_ms, t.max_ms, t.repeats) == (1.0, 3.0, 5.0, 5)
    assert t.q1_ms == 2.0 and t.q3_ms == 4.0 and t.iqr_ms == 2.0
    calls = []
    timed = [bench.TimedCall(lambda k=k: calls.append(k)) for k in "ab"]
    timings = bench.time_interleaved(timed, warmup=1, min_time_s=0.0, repeats=4, rounds=2)
    assert [t.repeats for t in timings] == [4, 4]
    assert "".join(calls) == "a" + "b" + "aa" + "bb" + "aa" + "bb"  # warm-up, then the rounds take turns


def test_spearman():
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(bench.spearman([1, 2], [1, 2]))


def test_latency_column():
    col = bench.latency_column(
        [MODEL, "shufflenet_v2_x0_5"], input_size_per_model={MODEL: 32, "shufflenet_v2_x0_5": 32}, threads=1,
        min_time_s=0.0,
    )  # fmt: skip
    assert list(col) == [MODEL, "shufflenet_v2_x0_5"]
    assert all(v > 0 for v in col.values())


def test_patterns_are_expanded_by_the_api():
    names = bench.expand_models(["mobilenet_v3_small*", MODEL, "shufflenet_v2_x0_5"])
    assert names[0] == MODEL and names.count(MODEL) == 1 and names[-1] == "shufflenet_v2_x0_5"
    assert set(names[:-1]) == set(lightnets.list_models("mobilenet_v3_small*"))
    rows = bench.benchmark("shufflenet_v2_x0_*", input_sizes=(32,), threads=(1,), **TINY)
    assert [r.model for r in rows] == lightnets.list_models("shufflenet_v2_x0_*")
    with pytest.raises(ValueError, match="no registered model matches"):
        bench.benchmark(["no_such_family_*"], **TINY)


def test_bad_arguments():
    assert "eager" in bench.available_engines()
    assert set(bench.available_engines()) <= set(bench.ENGINES)
    with pytest.raises(ValueError, match="unknown engine"):
        bench.benchmark([MODEL], engines=("no-such-engine",), **TINY)
    with pytest.raises(ValueError, match="batch_sizes"):
        bench.benchmark([MODEL], batch_sizes=(0,), **TINY)
    with pytest.raises(ValueError, match="threads"):
        bench.benchmark([MODEL], threads=(-1,), **TINY)
    with pytest.raises(ValueError, match="unknown model"):
        bench.benchmark(["no_such_model"], **TINY)
    with pytest.raises(ValueError, match="repeats"):
        bench.benchmark([MODEL], warmup=0, min_time_s=0, repeats=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            bench.benchmark([MODEL], device="cuda", **TINY)


@pytest.mark.skipif("optimized" not in bench.available_engines(), reason="lightnets.deploy not available")
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the optimized engine's TorchScript
def test_deploy_engines_are_benchmarked_through_their_runners():
    rows = bench.benchmark([MODEL], input_sizes=(32,), engines=("eager", "optimized"), threads=(1,), **TINY)
    assert [r.engine for r in rows] == ["eager", "optimized"]
    assert rows[0].macs == rows[1].macs and all(r.latency_ms > 0 for r in rows)


def test_cli_bench(tmp_path, capsys):
    png = tmp_path / "plot.png"
    argv = ["bench", "mobilenet_v3_small*", "--input-size", "32", "--threads", "1", "--warmup", "0",
            "--min-time", "0", "--repeats", "2", "--rounds", "1", "--format", "json", "--plot", str(png)]  # fmt: skip
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    names = [r["model"] for r in doc["rows"]]
    assert MODEL in names and len(names) >= 3 and all(n.startswith(MODEL) for n in names)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["bench", "nothing_matches_*", "--min-time", "0"]) == 2
    assert "no registered model matches" in capsys.readouterr().err
