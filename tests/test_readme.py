"""README.md's model table is generated, not typed: its static columns must equal `lightnets models` now."""

from __future__ import annotations

import re
from pathlib import Path

from lightnets.analysis.zoo import format_table, model_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_model_table_is_current() -> None:
    text = README.read_text()
    block = text[text.index("<!-- models:begin -->") : text.index("<!-- models:end -->")]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    # drop the last (measured latency) column: it depends on the machine that ran `lightnets bench`
    static = [re.sub(r"\| [^|]* \|$", "|", ln) if i != 1 else ln.rsplit("---|", 1)[0] for i, ln in enumerate(lines)]
    expected = format_table(model_table(), "markdown").splitlines()
    assert static == expected, "README.md is stale: run `python scripts/update_readme.py`"
