"""The efficiency tables and figures, from the committed run records (no GPU, no timing).

Reads experiments/efficiency/records/<device>/ and writes experiments/efficiency/tables/<device>/:
  <stem>.{json,md,png}   the attention sweep: the device's sweep runs ``<stem>_<letter>.json``
                         merged in name order (a later run's cell replaces an earlier one's; the
                         table's ``run`` column says which run timed each cell), its table and plot
  <record>.md            each whole-model record (GPT-2 training tokens/s, decoding)

    python -m experiments.efficiency.make_table            # every device folder of records/
    python -m experiments.efficiency.make_table --device h200
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.efficiency.records import load_device_records
from experiments.efficiency.render import model_markdown, write_outputs

HERE = Path(__file__).resolve().parent


def make_tables(records: Path, tables: Path) -> list[Path]:
    """Regenerate one device's tables from its records folder into ``tables``; returns the files written."""
    sweeps, models = load_device_records(records)
    if not sweeps and not models:
        raise FileNotFoundError(f"no run records (*.json) in {records}; a run's JSON goes there")
    tables.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, record in sweeps.items():
        write_outputs(record, tables)
        written += [tables / f"{stem}.{ext}" for ext in ("json", "md", "png")]
    for stem, record in models.items():
        (tables / f"{stem}.md").write_text(model_markdown(record))
        written.append(tables / f"{stem}.md")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="one device folder of records/ (default: all)")
    parser.add_argument("--records", type=Path, default=None, help="default: records/ beside this module")
    parser.add_argument("--out", type=Path, default=None, help="default: tables/ beside this module")
    args = parser.parse_args(argv)
    records = args.records or HERE / "records"
    out = args.out or HERE / "tables"
    devices = [args.device] if args.device else sorted(p.name for p in records.iterdir() if p.is_dir())
    for device in devices:
        for path in make_tables(records / device, out / device):
            print(path)


if __name__ == "__main__":
    main()
