"""The laboratory's command line, registry and RESULTS.md table."""
import os

import pytest

from examples.book import __main__ as cli
from examples.book import registry, results

REFS = ["3.4.4", "3.5", "4.1.2", "4.1.4", "4.2", "6.1", "6.2-6.3", "6.4", "6.5"]


def test_list_names_every_experiment_in_the_books_order(capsys):
    assert cli.main(["--list"]) == 0
    refs = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert [r for r in refs if r in REFS] == REFS          # other chapters may sit between


def test_quick_run_prints_its_row_and_leaves_results_md(tmp_path, capsys):
    before = open(results.PATH, encoding="utf-8").read() if os.path.exists(results.PATH) else None
    assert cli.main(["6.4", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "-- 6.4: book W = [[3.376, -1.327], [-1.327, 1.056]]" in out
    assert os.path.exists(tmp_path / "6.4" / "zca_patches.png")
    after = open(results.PATH, encoding="utf-8").read() if os.path.exists(results.PATH) else None
    assert before == after


def test_unknown_section_is_refused(capsys):
    assert cli.main(["9.99", "--quick"]) == 2
    assert "unknown section(s) 9.99" in capsys.readouterr().err


def test_rows_are_replaced_and_kept_in_the_books_order(tmp_path):
    path = str(tmp_path / "RESULTS.md")
    results.update_rows({"6.4": results.format_row("6.4", "ZCA", "b", "old", "d", "c", 1.0),
                         "10.1": results.format_row("10.1", "x", "b", "o", "d", "c", 2.0)}, path)
    results.update_rows({"6.4": results.format_row("6.4", "ZCA", "b", "new | value", "d", "c", 3.0),
                         "3.5": results.format_row("3.5", "eq", "b", "o", "d", "c", 4.0)}, path)
    rows = list(results.read_rows(path).values())
    assert [r.split("|")[1].strip() for r in rows] == ["3.5", "6.4", "10.1"]
    assert "new \\| value" in rows[1] and "3.0 s" in rows[1] and "old" not in rows[1]


def test_registering_a_section_twice_is_an_error():
    registry.load_all()
    with pytest.raises(ValueError, match="experiment 6.4 registered twice"):
        registry.experiment("6.4", "again", book="-")(lambda ctx: None)
    assert registry.ref_key("10.2") > registry.ref_key("9.1") > registry.ref_key("6.2-6.3") > registry.ref_key("6.2")


def test_a_row_on_other_data_sorts_after_its_section():
    keys = ["6.2", "6.1 [fashion-mnist]", "10.1", "6.1", "3.4.4"]
    assert sorted(keys, key=registry.ref_key) == ["3.4.4", "6.1", "6.1 [fashion-mnist]", "6.2", "10.1"]
