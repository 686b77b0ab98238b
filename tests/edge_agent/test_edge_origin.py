"""Download URLs get the device token only on the configured control-plane origin, and JSON is parsed strictly."""

from __future__ import annotations

import json

import pytest

from edge_agent.manifest import artifact_url, url_origin
from edge_agent.strict_json import StrictJsonError, loads_strict

CP = "http://cp.example:8000"


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example:8000/a",
        "http://cp.example:8001/a",  # other port
        "https://cp.example:8000/a",  # other scheme
        "http://cp.example:8000@evil.example/a",  # userinfo: the real host is evil.example
        "http://user@cp.example:8000/a",  # userinfo on the right host is refused too
        "http://user:pw@cp.example:8000/a",
        "http://evil.example\\@cp.example:8000/a",  # backslash: browsers and urllib disagree
        "/\\evil.example/a",
        "http://cp.example.:8000/a",  # trailing dot
        "http://cp.ex\u0430mple:8000/a",  # Cyrillic 'a' (IDNA look-alike)
        "http://cp.example:8000/\u00e9",  # any non-ASCII
        "//evil.example/a",  # scheme-relative
        "//cp.example:8000/a",
        "http://cp.example:8000\t.evil.example/a",  # urlsplit would silently drop the tab
        "http://cp.example:8000\n/a",
        "http://cp.example:8000 /a",
        "ftp://cp.example:8000/a",
        "file:///etc/passwd",
        "http://cp.example%2eevil:8000/a",
        "http://cp.example:99999/a",
        "http://cp.example:80/a",  # the default port is not the configured one
        "http://[::1]:8000/a",
        "http://127.0.0.1:8000/a",
        "api/v1/a",  # relative without a slash
        "",
    ],
)
def test_foreign_or_ambiguous_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        artifact_url(CP, url)


@pytest.mark.parametrize(
    ("configured", "url"),
    [
        (CP, "/api/v1/artifacts/sha256/abc"),
        (CP, "http://cp.example:8000/api/v1/x"),
        (CP, "http://CP.Example:8000/api/v1/x"),  # host names are case-insensitive
        ("http://cp.example", "http://cp.example:80/x"),  # the default port, written or not
        ("https://cp.example", "https://cp.example:443/x"),
        ("http://[::1]:8000", "http://[0:0::1]:8000/x"),  # IPv6 literals in canonical form
        ("http://127.0.0.1:8000/base/", "/api/v1/x"),
    ],
)
def test_same_origin_forms_are_accepted(configured: str, url: str) -> None:
    resolved = artifact_url(configured, url)
    assert url_origin(resolved) == url_origin(configured)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError in the stdlib decoder
        b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
        b'{"a": 1e999}',  # overflows to inf
        b'{"a": 18446744073709551616}', b'{"a": 9223372036854775808}', b'{"a": -9223372036854775809}',
        b'{"a": ' + b"9" * 5000 + b"}",  # beyond int()'s digit limit
        b'{"a": "\xff\xfe"}', b"\xff\xfe",  # invalid UTF-8
        b'{"a": 1', b"",
        b" " * (2 << 20),  # over the size cap
    ],
)
def test_every_decoder_failure_is_one_error(data: bytes) -> None:
    with pytest.raises(StrictJsonError):
        loads_strict(data)


def test_bounded_values_parse() -> None:
    value = {"a": 2**63 - 1, "b": -(2**63), "c": 1.5e308, "d": [[0.0]] * 3}
    assert loads_strict(json.dumps(value).encode()) == value
