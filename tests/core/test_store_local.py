"""Local-folder backend specifics: atomic writes under SIGKILL, stale sidecars, symlinks, conflicts."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from likeness.core.errors import FailedPrecondition, NotFound
from likeness.core.settings import CommonSettings
from likeness.core.store import open_store
from likeness.core.store_local import LocalStore
from tests.helpers import ROOT, wait_for

WRITER = """
import sys
from likeness.core.store_local import LocalStore
LocalStore(sys.argv[1]).put_file("models/w.bin", sys.argv[2])
"""


def test_killed_writer_leaves_old_object_intact_and_no_partial_file(tmp_store, tmp_path):
    tmp_store.put("models/w.bin", b"old complete version")
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_store.root), str(fifo)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "services")},
    )
    with open(fifo, "wb") as feed:  # blocks until the writer opens its end
        feed.write(os.urandom(1024 * 1024))
        feed.flush()
        # The writer has half an object in its temp file now; kill it mid-write.
        wait_for(lambda: any((tmp_store.root / ".likeness/tmp").iterdir()), timeout=30, what="temp file")
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert tmp_store.get("models/w.bin") == b"old complete version"
    assert tmp_store.list() == ["models/w.bin"]
    assert tmp_store.stat("models/w.bin").sha256 == hashlib.sha256(b"old complete version").hexdigest()


def test_stale_sidecar_is_detected_and_sha_recomputed(tmp_store):
    tmp_store.put("a.txt", b"recorded")
    path = tmp_store.root / "a.txt"
    path.write_bytes(b"changed behind the store's back")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1000))
    info = tmp_store.stat("a.txt")
    assert info.sha256 == hashlib.sha256(b"changed behind the store's back").hexdigest()


def test_object_placed_by_hand_gets_sha_and_media_type(tmp_store):
    (tmp_store.root / "ref").mkdir()
    (tmp_store.root / "ref/face.png").write_bytes(b"png")
    info = tmp_store.stat("ref/face.png")
    assert (info.sha256, info.size, info.media_type) == (hashlib.sha256(b"png").hexdigest(), 3, "image/png")


def test_symlink_out_of_the_root_is_not_followed(tmp_store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (tmp_store.root / "link").symlink_to(secret)
    with pytest.raises(NotFound):
        tmp_store.get("link")
    assert not tmp_store.exists("link")


def test_object_and_folder_of_the_same_name_conflict(tmp_store):
    tmp_store.put("a", b"1")
    with pytest.raises(FailedPrecondition, match="conflicts"):
        tmp_store.put("a/b", b"2")
    assert tmp_store.get("a") == b"1"


def test_internal_folder_is_hidden_and_empty_folders_pruned(tmp_store):
    tmp_store.put("x/y/z", b"1")
    assert tmp_store.list() == ["x/y/z"]
    tmp_store.delete("x/y/z")
    assert tmp_store.list() == []
    assert sorted(p.name for p in tmp_store.root.iterdir()) == [".likeness"]


def test_open_store_from_settings(tmp_path):
    store = open_store(CommonSettings(store_uri=f"file://{tmp_path}/s/"))
    assert isinstance(store, LocalStore)
    assert store.root_uri == f"file://{tmp_path}/s"
    assert store.put("k", b"v").uri == f"file://{tmp_path}/s/k"
