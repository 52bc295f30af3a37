"""``one_line``: the message every library error and quoted third-party error is shown as."""

import pytest

from mmal.errors import DataError, one_line


@pytest.mark.parametrize(("exc", "limit", "expected"), [
    (DataError("bad\n  file\tx.png"), None, "bad file x.png"),
    (ValueError("a  b " + "c" * 300), 10, "a b cccccc"),
    (ValueError("short"), 200, "short"),
    (OSError(), None, "OSError"),
    (KeyError(), 5, "KeyError"),
    (ValueError(" \n "), None, "ValueError"),
    (DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback "
               "(most recent call last):\n  File \"x.py\", line 1\n"
               "mmal.errors.DataError: sample 3: cannot read image a.png"), None,
     "sample 3: cannot read image a.png"),
])
def test_one_line(exc, limit, expected):
    assert one_line(exc, limit=limit) == expected
