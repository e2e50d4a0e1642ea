"""Run records to tables and figures; nothing here trains or loads a model."""

from hedgehog.results.figures import history_curve, plot_histories
from hedgehog.results.labels import ATTENTION_LABELS, attention_label, paper_key
from hedgehog.results.records import code_version, hardware, load_records, load_wandb_records, write_record
from hedgehog.results.tables import (
    DIFFERENCE_RULE,
    compare_seeds,
    latex_table,
    markdown_table,
    mean_spread,
    paper_results,
    published_records,
    records_with,
    table_main,
    write_tables,
)

__all__ = [
    "ATTENTION_LABELS",
    "DIFFERENCE_RULE",
    "attention_label",
    "code_version",
    "compare_seeds",
    "hardware",
    "history_curve",
    "latex_table",
    "load_records",
    "load_wandb_records",
    "markdown_table",
    "mean_spread",
    "paper_key",
    "paper_results",
    "plot_histories",
    "published_records",
    "records_with",
    "table_main",
    "write_record",
    "write_tables",
]
