"""errors.first_line: one line of any exception for a one-line user-facing message."""

from findistill.errors import first_line


def test_first_line_takes_the_first_line_or_the_class_name():
    err = OSError("  cannot open file\nTraceback details\nmore  ")
    assert first_line(err) == "cannot open file"
    assert first_line(err, with_type=True) == "OSError: cannot open file"
    assert first_line(ValueError()) == "ValueError"
    assert first_line(ValueError("\n  \n"), with_type=True) == "ValueError"
    assert first_line(KeyError("col")) == "'col'"
