"""Key and URI validation: the rules, the messages, and a property test that no key escapes the root."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from likeness.core.errors import InvalidArgument
from likeness.core.uris import allowed_buckets, parse_uri, validate_key


def test_parse_file_and_s3_uris():
    assert parse_uri("file:///data/store/a/b.png") == parse_uri("FILE:///data/store/a/b.png")
    p = parse_uri("file:///data/store/a/b.png")
    assert (p.scheme, p.bucket, p.path) == ("file", "", "/data/store/a/b.png")
    assert parse_uri("file://localhost/x").path == "/x"
    p = parse_uri("s3://my-bucket.eu/jobs/1/out.png")
    assert (p.scheme, p.bucket, p.path) == ("s3", "my-bucket.eu", "jobs/1/out.png")
    assert parse_uri("s3://bucket").path == ""


@pytest.mark.parametrize(
    "uri,fragment",
    [
        ("just/a/key", "is not a URI"),
        ("http://host/x", "scheme 'http' is not supported"),
        ("file://evil.example/etc/passwd", "no host"),
        ("s3://UPPER/x", "not a valid S3 bucket name"),
        ("s3://ab/x", "not a valid S3 bucket name"),
        ("s3://a..b/x", "not a valid S3 bucket name"),
        ("s3://bucket/../x", "path traversal"),
        ("s3://bucket/a\tb", "control character"),
        ("file:///a\\b", "backslash"),
        ("s3://bucket/" + "k" * 2100, "over the limit of 2048"),
    ],
)
def test_bad_uris_name_the_field_and_the_rule(uri, fragment):
    with pytest.raises(InvalidArgument) as err:
        parse_uri(uri, "reference.uri")
    assert err.value.field == "reference.uri"
    assert fragment in str(err.value)


def test_key_messages_show_control_characters_escaped():
    with pytest.raises(InvalidArgument) as err:
        validate_key("a\x00b", "images[1].uri")
    assert str(err.value) == "images[1].uri: key 'a\\\\x00b' contains a NUL byte"


def test_prefixes_may_be_empty_or_end_with_a_slash():
    assert validate_key("", prefix=True) == ""
    assert validate_key("jobs/", prefix=True) == "jobs/"
    with pytest.raises(InvalidArgument):
        validate_key("jobs/")
    with pytest.raises(InvalidArgument):
        validate_key("../", prefix=True)


def test_allowed_buckets_setting():
    assert allowed_buckets(" a-b , ccc,,") == frozenset({"a-b", "ccc"})
    with pytest.raises(InvalidArgument, match="LIKENESS_ALLOWED_BUCKETS"):
        allowed_buckets("Bad_Name")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "b", ".", "..", "/", "\\", "\x00", "\n", "~", " ", "é", "%2e"]), max_size=16
    ).map("".join)
)
def test_no_accepted_key_leaves_the_root(key):
    root = PurePosixPath("/store/root")
    try:
        validate_key(key)
    except InvalidArgument:
        return
    resolved = PurePosixPath(os.path.normpath(root / key))
    assert resolved.is_relative_to(root) and resolved != root
    assert "\\" not in key and "\x00" not in key and not key.startswith("/")
