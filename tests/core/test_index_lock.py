"""One server per index, and the clean-up of writes interrupted by a crash."""
from __future__ import annotations

import os

import pytest

from pacsbox import StartupError, create_app


def test_a_second_app_on_the_same_index_is_refused(tmp_path):
    cfg = {"StorageDirectory": str(tmp_path / "data")}
    first = create_app(cfg, load_entrypoints=False)
    try:
        with pytest.raises(StartupError, match="already in use by another pacsbox"):
            create_app(cfg, load_entrypoints=False)
    finally:
        first.close()
    again = create_app(cfg, load_entrypoints=False)  # the lock went with the first app
    again.close()


def test_temporary_files_of_a_crash_are_removed_at_start(tmp_path):
    data = tmp_path / "data"
    leftover = data / "ab" / "cd" / "abcd0000-0000-0000-0000-000000000000.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a file")
    kept = data / "ab" / "cd" / "abcd0000-0000-0000-0000-000000000001"
    kept.write_bytes(b"a whole file")
    app = create_app({"StorageDirectory": str(data)}, load_entrypoints=False)
    try:
        assert not leftover.exists()
        assert kept.read_bytes() == b"a whole file"
    finally:
        app.close()
    assert sorted(os.listdir(data / "ab" / "cd")) == ["abcd0000-0000-0000-0000-000000000001"]
