"""One contract for every ArtifactStore backend: the local folder and S3 (a real SeaweedFS server)."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from likeness.core.errors import InvalidArgument, NotFound
from likeness.core.store import ArtifactStore, StoredObject


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return request.getfixturevalue("tmp_store")
    seaweed = request.getfixturevalue("seaweed")
    from likeness.core.store import open_store

    # A fresh prefix per test keeps tests independent on one shared server.
    return open_store(seaweed.settings("contract"), f"s3://contract/t-{uuid.uuid4().hex[:8]}")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_get_roundtrip_records_sha256(store):
    data = b"\x89PNG fake image bytes \x00\xff"
    obj = store.put("jobs/a/out.png", data, "image/png")
    assert obj == StoredObject(store.uri("jobs/a/out.png"), sha(data), len(data), "image/png")
    assert store.get("jobs/a/out.png") == data
    assert store.get(obj.uri) == data  # by URI as well as by key
    assert store.stat(obj.uri) == obj
    assert store.exists("jobs/a/out.png") and store.exists(obj.uri)


def test_empty_object(store):
    obj = store.put("empty", b"")
    assert obj.size == 0 and obj.sha256 == sha(b"")
    assert store.get("empty") == b""


def test_overwrite_replaces_data_and_sha(store):
    store.put("k", b"first", "text/plain")
    obj = store.put("k", b"second version", "application/json")
    assert store.get("k") == b"second version"
    assert store.stat("k") == obj
    assert obj.sha256 == sha(b"second version") and obj.media_type == "application/json"


def test_not_found_names_the_uri(store):
    uri = store.uri("missing/object.bin")
    for call in (store.get, store.stat, store.open):
        with pytest.raises(NotFound) as err:
            call("missing/object.bin", field="images[0].uri")
        assert uri in str(err.value) and str(err.value).startswith("images[0].uri:")
    assert not store.exists("missing/object.bin")
    assert store.delete("missing/object.bin") is False


def test_list_is_sorted_prefix_filtered_and_delete_removes(store):
    for key in ["b/2", "a/1", "a/10", "a/2/x", "ab", "c"]:
        store.put(key, key.encode())
    assert store.list() == ["a/1", "a/10", "a/2/x", "ab", "b/2", "c"]
    assert store.list("a/") == ["a/1", "a/10", "a/2/x"]
    assert store.list("a") == ["a/1", "a/10", "a/2/x", "ab"]  # string prefix, as in S3
    assert store.list("a/1") == ["a/1", "a/10"]
    assert store.list("zzz/") == []
    assert store.delete("a/2/x") is True
    assert not store.exists("a/2/x")
    assert store.list("a/") == ["a/1", "a/10"]


def test_streaming_put_file_get_to_file_and_open(store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    obj = store.put_file("big/blob.bin", src, "application/x-test")
    assert (obj.size, obj.sha256) == (len(data), sha(data))
    assert store.stat("big/blob.bin").sha256 == sha(data)
    out = tmp_path / "deep" / "out.bin"
    got = store.get_to_file(obj.uri, out)
    assert out.read_bytes() == data and got.sha256 == sha(data)
    assert [p.name for p in out.parent.iterdir()] == ["out.bin"]  # no temp file left behind
    with store.open("big/blob.bin") as stream:
        head = stream.read(1000)
        rest = stream.read()
    assert head + rest == data


def test_unicode_and_spaces_in_keys(store):
    key = "runs/é ü/名前 1.png"
    obj = store.put(key, b"x")
    assert store.key_of(obj.uri) == key
    assert store.list("runs/") == [key]


BAD_KEYS = [
    ("../escape", "traversal"),
    ("a/../../etc/passwd", "traversal"),
    ("a/./b", "traversal"),
    ("/etc/passwd", "absolute"),
    ("a//b", "empty segment"),
    ("a\x00b", "NUL"),
    ("a\nb", "control"),
    ("a\x7fb", "control"),
    ("a\\..\\b", "backslash"),
    ("", "empty"),
    ("x" * 1025, "1024 bytes"),
    ("a/" + "y" * 256, "255 bytes"),
    (".likeness/meta/x.json", "reserved"),
]


@pytest.mark.parametrize("key,reason", BAD_KEYS, ids=[r for _, r in BAD_KEYS])
def test_bad_keys_rejected_everywhere(store, key, reason):
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key, field="images[3].uri"),
        lambda: store.exists(key, field="images[3].uri"),
        lambda: store.stat(key, field="images[3].uri"),
        lambda: store.delete(key, field="images[3].uri"),
    ):
        with pytest.raises(InvalidArgument) as err:
            call()
        assert err.value.field in ("key", "images[3].uri")
    if key:  # "" is the root as a prefix: uri("") == root_uri
        with pytest.raises(InvalidArgument):
            store.uri(key)


def test_bad_uris_rejected(store):
    root = store.root_uri
    bad = [
        f"{root}/../outside",
        f"{root}/a/%2e%2e/../b",
        "ftp://host/file",
        "s3://Bad_Bucket/key",
        "s3://not-an-allowed-bucket/key",
        "file://remotehost/etc/passwd",
        "file:///etc/passwd",
        root + "/a\x00",
        "s3://" + "a" * 2100,
    ]
    for uri in bad:
        with pytest.raises(InvalidArgument) as err:
            store.get(uri, field="reference_uri")
        assert str(err.value).startswith("reference_uri:"), uri


def test_key_of_roundtrip(store):
    assert store.key_of("x/y.png") == "x/y.png"
    assert store.key_of(store.uri("x/y.png")) == "x/y.png"
    assert not store.root_uri.endswith("/")


def test_prefixes_and_the_root(store):
    store.put("ds/one/a.png", b"a")
    store.put("ds/one/a.txt", b"caption")
    root = store.root_uri
    assert store.key_of(root) == "" and store.key_of(root + "/") == ""
    assert store.uri("") == root
    assert store.key_of(store.uri("ds/one/")) == "ds/one/"
    assert store.list(store.uri("ds/one/")) == ["ds/one/a.png", "ds/one/a.txt"]  # a URI as prefix
    assert store.list(store.key_of(root)) == ["ds/one/a.png", "ds/one/a.txt"]
    for bad in ("ds/one/", ""):  # a prefix cannot name an object
        with pytest.raises(InvalidArgument):
            store.get(bad, field="uri")
        with pytest.raises(InvalidArgument):
            store.put(bad, b"x")
    with pytest.raises(InvalidArgument):
        store.put(root, b"x")
    with pytest.raises(InvalidArgument):
        store.object_key("ds/one/")
