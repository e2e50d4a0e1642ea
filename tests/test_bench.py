"""The benchmark's whole-model harness on a tiny GPT-2 (CPU): it must measure what it says."""

import pytest

from hedgehog import bench


def test_decode_harness_decodes_from_the_cache_and_the_state_does_not_grow():
    rows = [
        row for context in (8, 40) for row in bench.decode_throughput("cpu", context, 2, 2, bench.GPT2_TINY)
    ]
    by = {(r["attention"], r["context"]): r for r in rows}
    # decode_throughput raises unless each cache saw context + warm-up + timed tokens
    assert by[("hedgehog", 8)]["cache_MB"] == pytest.approx(by[("hedgehog", 40)]["cache_MB"])
    assert by[("sdpa", 40)]["cache_MB"] > 3 * by[("sdpa", 8)]["cache_MB"]
    assert all(r["step_ms"] > 0 and r["tokens_per_s"] > 0 for r in rows)


def test_model_table_has_a_row_per_length_and_context():
    record = {
        "device": "CPU",
        "note": "test",
        "train": [
            {"attention": a, "T": 16, "B": 2, "step_ms": 1.0, "tokens_per_s": 32.0}
            for a in ("sdpa", "hedgehog")
        ],
        "decode": [
            {"attention": a, "context": c, "batch": 2, "step_ms": 2.0, "tokens_per_s": 1000.0}
            for c in (8, 40)
            for a in ("sdpa", "hedgehog")
        ],
    }
    table = bench.model_markdown(record)
    assert "| 16 | 2 |" in table and "| 8 | 2 |" in table and "| 40 | 2 |" in table
