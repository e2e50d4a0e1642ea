"""Run records to tables and figures; nothing here trains or loads a model."""

from hedgehog.results.records import code_version, hardware, load_records, load_wandb_records, write_record
from hedgehog.results.tables import (
    DIFFERENCE_RULE,
    compare_seeds,
    latex_table,
    markdown_table,
    mean_spread,
    paper_results,
    write_tables,
)

__all__ = [
    "DIFFERENCE_RULE",
    "code_version",
    "compare_seeds",
    "hardware",
    "latex_table",
    "load_records",
    "load_wandb_records",
    "markdown_table",
    "mean_spread",
    "paper_results",
    "write_record",
    "write_tables",
]
