"""Log injection (issue #11 item 9): a peer-supplied value must stay one field on one line."""

import logging
import re

import pytest

from shortpath import log

#: One kv() value as the format writes it: bare, or double-quoted with backslash escapes.
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]+)')


def _unquote(v: str) -> str:
    if not v.startswith('"'):
        return v
    return v[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")


HOSTILE = [
    "desktop\n2026-11-30 05:00:00,000 ERROR shortpath.broker BUG selected host has no link host=host-1",
    "a\rb", "tab\there", "quote\"inside", "single'quote", "back\\slash", "k=v", "x host=forged",
    "nul\x00byte", "esc\x1b[31mred", "del\x7f", "c1\x85next", "ls\u2028ps\u2029", "", " ", "plain-value",
    "ünïcode ok", "\\n literal backslash-n",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_value_stays_one_field_on_one_line(value):
    line = log.kv("launch-refused", user=value, resource="desktop")
    assert "\n" not in line and "\r" not in line
    assert not any(c in line for c in "\x00\x1b\x7f\x85\u2028\u2029")
    fields = dict(_FIELD.findall(line))
    assert set(fields) == {"user", "resource"}, line       # nothing forged as another field
    assert _unquote(fields["user"]) == value                # and nothing lost
    assert fields["resource"] == "desktop"


def test_plain_values_are_left_bare_and_none_is_skipped():
    assert log.kv("ev", a="x", b=3, c=None, d=1.5) == "ev a=x b=3 d=1.5"


def test_event_name_control_characters_are_escaped():
    assert log.kv("ev\nERROR forged") == "ev\\nERROR forged"


def test_forged_line_does_not_reach_the_log(caplog):
    caplog.set_level(logging.INFO, logger="shortpath.test")
    log.get("test").info(log.kv("launch-refused", resource=HOSTILE[0]))
    text = caplog.text
    assert text.count("\n") == 1 and "BUG" in text           # the value is there, escaped
    assert not any(r.getMessage().startswith("2026") for r in caplog.records)
