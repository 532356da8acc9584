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


# The second table: sample quality of chapter 10's generative models, one row per model, after the first.
QUALITY_TITLE = "## Sample quality of the generative models (chapter 10)"
QUALITY_HEADER = QUALITY_TITLE + """

Generated digits classified by the LeNet of `make demo` (brewnet.tools.sample_quality; a LeNet trained on the
bundled digits when the demo's weights are absent): the share of each predicted digit, the inception-style
score exp(E_x KL(p(y|x) || p(y))) (10 at most: confident and evenly spread; 1: one class or nothing
recognisable; the row "real digits" classifies the bundled test digits), and for a categorical code the
accuracy of the best code -> digit assignment.  Each model's experiment writes its row.

| model | section | samples | score | digits 0..9 (% of samples) | code -> digit accuracy | notes |
|---|---|---|---|---|---|---|
"""


def _read_tables(path):
    """(ref -> row line of the experiments' table, model -> row line of the quality table)."""
    rows, quality, table = {}, {}, None
    if not os.path.exists(path):
        return rows, quality
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("## "):
                table = quality if line.startswith(QUALITY_TITLE) else None
            elif line.startswith("| ") and not line.startswith(("| section", "| model")):
                (rows if table is None else table)[line.split("|")[1].strip()] = line.rstrip("\n")
    return rows, quality


def read_rows(path=PATH):
    """ref -> row line, from an existing table (none when the file is absent)."""
    return _read_tables(path)[0]


def _write(rows, quality, path):
    body = "\n".join(rows[ref] for ref in sorted(rows, key=ref_key))
    text = HEADER + body + "\n"
    if quality:
        text += "\n" + QUALITY_HEADER + "\n".join(quality[m] for m in sorted(quality, key=lambda m: (
            ref_key(quality[m].split("|")[2].strip()), m))) + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def update_rows(new_rows, path=PATH, new_quality=None):
    """Replace (or add) the rows of `new_rows` (ref -> row line) and `new_quality` (model -> quality row line)
    and rewrite both tables in the book's order."""
    rows, quality = _read_tables(path)
    rows.update(new_rows)
    quality.update(new_quality or {})
    _write(rows, quality, path)


def quality_row(model, ref, report, note=""):
    """A quality-table row from a brewnet.tools.sample_quality.QualityReport."""
    shares = " ".join(f"{100 * c / max(report.n, 1):.1f}" for c in report.histogram)
    code = "none (no categorical code)" if report.code_accuracy is None else f"{report.code_accuracy:.3f}"
    cells = [model, ref, report.n, f"{report.score:.2f}", shares, code, note or "-"]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"
