"""examples/book/RESULTS.md: one row per experiment, kept in the book's order; a run replaces its own row."""
import os

from .registry import ref_key

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = """# The book's laboratory: results

Regenerate every row with `python -m examples.book --all` (one experiment: `python -m examples.book 6.4`).
Figures go to `results/book/<section>/` (not committed). "book" is what 深度学习轻松学 prints or plots;
"brewnet" is this repository's run; a difference is explained in the row.

| section | experiment | book | brewnet | data | command | time |
|---|---|---|---|---|---|---|
"""


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_row(ref, title, book, ours, data, command, seconds):
    cells = [ref, title, book, ours, data, f"`{command}`", f"{seconds:.1f} s"]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def read_rows(path=PATH):
    """ref -> row line, from an existing table (none when the file is absent)."""
    if not os.path.exists(path):
        return {}
    rows = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("| ") and not line.startswith("| section"):
                rows[line.split("|")[1].strip()] = line.rstrip("\n")
    return rows


def update_rows(new_rows, path=PATH):
    """Replace (or add) the rows of `new_rows` (ref -> row line) and rewrite the table in the book's order."""
    rows = read_rows(path)
    rows.update(new_rows)
    body = "\n".join(rows[ref] for ref in sorted(rows, key=ref_key))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(HEADER + body + "\n")
    os.replace(tmp, path)
