"""Run records to tables and figures; nothing here trains or loads a model."""

from hedgehog.results.records import code_version, hardware, load_records, load_wandb_records, write_record

__all__ = ["code_version", "hardware", "load_records", "load_wandb_records", "write_record"]
