"""The efficiency experiment on the CPU: the whole-model harness on a tiny GPT-2 must measure what it
says, merged runs must say which run timed each cell, and the committed tables must regenerate
byte for byte from the committed records."""

from pathlib import Path

import pytest
import torch

from experiments.efficiency import make_table
from experiments.efficiency.model_bench import GPT2_TINY, decode_throughput
from experiments.efficiency.records import merge_records
from experiments.efficiency.render import markdown_table, model_markdown


def test_decode_harness_decodes_from_the_cache_and_the_state_does_not_grow():
    rows = [row for context in (8, 40) for row in decode_throughput("cpu", context, 2, 2, GPT2_TINY)]
    by = {(r["attention"], r["context"]): r for r in rows}
    assert {a for a, _ in by} == {"sdpa", "sdpa_static", "hedgehog", "hedgehog_graph"}
    # decode_throughput raises unless each cache saw context + warm-up + timed tokens
    for method in ("hedgehog", "hedgehog_graph"):
        assert by[(method, 8)]["cache_MB"] == pytest.approx(by[(method, 40)]["cache_MB"])
    assert by[("hedgehog_graph", 8)]["cache_MB"] == pytest.approx(by[("hedgehog", 8)]["cache_MB"])
    assert by[("sdpa", 40)]["cache_MB"] > 3 * by[("sdpa", 8)]["cache_MB"]
    # the static cache is allocated for every position the run reaches (context + 4), which the default's holds at the end
    assert by[("sdpa_static", 8)]["cache_MB"] == pytest.approx(by[("sdpa", 8)]["cache_MB"])
    assert all(r["step_ms"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    table = model_markdown({"device": "CPU", "note": "test", "decode": rows})
    assert "| 40 | 2 | Hedgehog, CUDA graph |" in table and "vs SDPA static cache" in table


def test_model_table_has_a_row_per_length_and_context():
    record = {
        "device": "CPU",
        "note": "test",
        "train": [
            {"attention": a, "T": 16, "B": 2, "step_ms": 1.0, "tokens_per_s": 32.0}
            for a in ("sdpa", "hedgehog")
        ],
        "decode": [
            {
                "attention": a,
                "context": c,
                "batch": 2,
                "step_ms": 2.0,
                "tokens_per_s": 1000.0,
                "cache_MB": 1.0,
            }
            for c in (8, 40)
            for a in ("sdpa", "hedgehog")
        ],
    }
    table = model_markdown(record)
    assert "| 16 | 2 |" in table and "| 8 | 2 |" in table and "| 40 | 2 |" in table
    assert "training T" not in model_markdown({**record, "train": []})


def _record(date: str, rows: list[tuple[int, str, float]], device: str = "GPU X") -> dict:
    return {
        "device": device,
        "stem": "results_x",
        "date": date,
        "software": {"torch": "t"},
        "rows": [
            {
                "shape": "gpt2",
                "H": 12,
                "D": 64,
                "F": 128,
                "T": t,
                "B": 8,
                "method": m,
                "fwd_bwd_ms": ms,
                "fwd_ms": ms,
            }
            for t, m, ms in rows
        ],
    }


def test_merged_records_take_the_later_run_and_say_which_run_timed_each_cell():
    first = _record("day 1", [(1024, "sdpa", 2.0), (1024, "fused", 6.0), (2048, "sdpa", 4.0)])
    second = _record("day 2", [(1024, "fused", 5.0), (4096, "fla", 30.0)])
    merged = merge_records([first, second])
    by = {(r["T"], r["method"]): r for r in merged["rows"]}
    assert by[(1024, "fused")]["fwd_bwd_ms"] == 5.0 and by[(1024, "fused")]["run"] == 1
    assert by[(1024, "sdpa")]["run"] == 0 and len(merged["rows"]) == 4
    assert [r["T"] for r in merged["rows"]] == [1024, 1024, 2048, 4096]
    assert merged["runs"][0]["rows"] == ["gpt2 1024 sdpa", "gpt2 2048 sdpa"]
    table = markdown_table(merged)
    assert "- run A: day 1" in table and "- run B: day 2" in table
    assert "| 1,024 | 2.000 |  |  | 5.000 | 0.40x |" in table and "| A/-/-/B |" in table
    with pytest.raises(ValueError, match="different devices"):
        merge_records([first, _record("day 3", [], device="GPU Y")])


def test_committed_tables_regenerate_byte_for_byte_from_the_records(tmp_path: Path):
    # md and json only: the png's bytes depend on the matplotlib version that drew it
    experiment = Path(make_table.__file__).parent
    for device in sorted(p for p in (experiment / "records").iterdir() if p.is_dir()):
        committed = experiment / "tables" / device.name
        written = make_table.make_tables(device, tmp_path / device.name)
        texts = sorted(p.name for p in written if p.suffix in (".md", ".json"))
        assert texts == sorted(p.name for p in committed.iterdir() if p.suffix in (".md", ".json"))
        for name in texts:
            assert (tmp_path / device.name / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check; the GPU runs check_kernel")
def test_generic_method_computes_the_reference_under_the_interpreter():
    """The sweep's ``generic`` method (Hedgehog's features written once, then the generic chunked kernels)
    is the same function as the reference and the fused method: outputs and map gradients, fp32."""
    from experiments.efficiency.attention_bench import hedgehog_map, make_forward

    torch.manual_seed(0)
    fmap = hedgehog_map(2, 16, "cpu")
    q, k, v = (torch.randn(1, 2, 100, 16, requires_grad=True) for _ in range(3))
    results = {}
    for method in ("reference", "fused", "generic"):
        out = make_forward(method, q, k, v, fmap)()
        results[method] = (out, torch.autograd.grad(out.sum(), (q, k, v, *fmap.parameters())))
    for method in ("fused", "generic"):
        torch.testing.assert_close(results[method][0], results["reference"][0], atol=1e-5, rtol=1e-4)
        for got, want in zip(results[method][1], results["reference"][1], strict=True):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_sweep_table_shows_the_generic_columns_only_when_timed():
    def row(method: str, ms: float) -> dict:
        return {
            "shape": "gpt2",
            "H": 12,
            "D": 64,
            "F": 128,
            "T": 1024,
            "B": 4,
            "method": method,
            "fwd_bwd_ms": ms,
        }

    record = {"device": "GPU X", "stem": "results_x", "rows": [row("sdpa", 2.0), row("fused", 4.0)]}
    assert "generic ms" not in markdown_table(record)
    record["rows"].append(row("generic", 3.0))
    record["correctness_generic"] = {"gpt2": {"out": 1e-3, "dq": 2e-3}}
    table = markdown_table(record)
    assert "| generic ms | generic / fused | generic peak GB |" in table and "| 3.000 | 0.75x |" in table
    assert "Generic kernel vs float64" in table and "- gpt2: 2.00e-03" in table


def test_profile_kernels_lists_what_ran_largest_first():
    """The lab profiles' one helper: on the CPU, operators by self time, largest first, summing to the total."""
    from experiments.efficiency.timing import profile_kernels

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    total, rows = profile_kernels(lambda: (a @ b).relu(), "cpu")
    times = [ms for ms, _, _ in rows]
    assert times == sorted(times, reverse=True) and total == pytest.approx(sum(times))
    assert {"aten::mm", "aten::relu"} <= {name for _, _, name in rows}
