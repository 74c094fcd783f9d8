"""Machine names, bus label escaping, flags and error names."""

from __future__ import annotations

import inspect
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gnspawn import errors
from gnspawn.errors import BY_DBUS_NAME, GnspawnError, InvalidArgs, InvalidName
from gnspawn.jobs.kinds.update import Update
from gnspawn.machines import check_name, valid_name
from gnspawn.manager import check_flags
from gnspawn.names import (
    ERROR_PREFIX,
    Flags,
    bus_label_escape,
    bus_label_unescape,
    machine_path,
)

ALLOWED = set(string.ascii_letters + string.digits + "-_.")


@pytest.mark.parametrize(
    "name",
    [
        "web",
        "w",
        "1",
        "gentoo-base",
        "db_primary",
        "_hidden",
        "host.example.org",
        "a.b-c_d",
        "UPPER9",
        "x" * 64,
        "0123456789",
    ],
)
def test_valid_names(name: str) -> None:
    assert valid_name(name)
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-web",
        ".web",
        "..",
        ".",
        "a..b",
        "web..",
        "a/b",
        "/web",
        "../etc",
        "web\0",
        "we\0b",
        "web\n",
        "\nweb",
        "w\teb",
        "w\x7feb",
        "web ",
        " web",
        "wéb",
        "\uff57\uff45\uff42",
        "web\u200b",
        "x" * 65,
        "a@b",
        "a:b",
        "a*",
        "$(id)",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)
    with pytest.raises(InvalidName) as caught:
        check_name(name)
    assert repr(name) in str(caught.value)


def test_invalid_name_message_shows_the_name() -> None:
    with pytest.raises(InvalidName) as caught:
        check_name("a/b")
    assert str(caught.value) == "invalid machine name 'a/b'"


def test_invalid_name_message_shortens_long_names() -> None:
    with pytest.raises(InvalidName) as caught:
        check_name("y" * 500)
    assert str(caught.value) == f"invalid machine name {'y' * 77 + '...'!r}"


def test_invalid_name_is_a_gnspawn_error_with_its_bus_name() -> None:
    assert issubclass(InvalidName, GnspawnError)
    assert InvalidName.dbus_name == "org.gnspawn1.Error.InvalidName"


@given(st.text(alphabet=st.sampled_from([*sorted(ALLOWED), "/", "\0", " ", "é", "\n", ":"])))
def test_accepted_names_follow_the_rules(name: str) -> None:
    if valid_name(name):
        assert 1 <= len(name) <= 64
        assert "/" not in name
        assert ".." not in name
        assert not name.startswith(("-", "."))
        assert set(name) <= ALLOWED
        assert check_name(name) == name
    else:
        with pytest.raises(InvalidName):
            check_name(name)


@given(st.text())
def test_any_text_accepted_follows_the_rules(name: str) -> None:
    if valid_name(name):
        assert 1 <= len(name) <= 64
        assert "/" not in name
        assert ".." not in name
        assert not name.startswith(("-", "."))
        assert set(name) <= ALLOWED


@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", fullmatch=True))
def test_names_by_the_rules_are_accepted(name: str) -> None:
    assert valid_name(name)


@given(st.text(alphabet=sorted(ALLOWED), min_size=1, max_size=80))
def test_valid_name_agrees_with_the_rules(name: str) -> None:
    expected = len(name) <= 64 and name[0] not in "-." and ".." not in name
    assert valid_name(name) == expected


@pytest.mark.parametrize(
    ("label", "escaped"),
    [
        ("", "_"),
        ("web", "web"),
        ("1web", "_31web"),
        ("web1", "web1"),
        ("a-b", "a_2db"),
        ("a_b", "a_5fb"),
        ("a.b", "a_2eb"),
        ("_", "_5f"),
        ("Web", "Web"),
        ("gentoo.example-1", "gentoo_2eexample_2d1"),
        ("/", "_2f"),
        ("é", "_c3_a9"),
        ("a b", "a_20b"),
        ("\0", "_00"),
    ],
)
def test_bus_label_escape_matches_sd_bus_path_encode(label: str, escaped: str) -> None:
    assert bus_label_escape(label) == escaped
    assert bus_label_unescape(escaped) == label


def test_machine_path() -> None:
    assert machine_path("web") == "/org/gnspawn1/machine/web"
    assert machine_path("1web") == "/org/gnspawn1/machine/_31web"


@given(st.text())
def test_bus_label_round_trip(label: str) -> None:
    escaped = bus_label_escape(label)
    assert escaped
    assert set(escaped) <= set(string.ascii_letters + string.digits + "_")
    assert not escaped[0].isdigit()
    assert bus_label_unescape(escaped) == label


@given(st.text(), st.text())
def test_bus_label_escape_is_injective(a: str, b: str) -> None:
    if a != b:
        assert bus_label_escape(a) != bus_label_escape(b)


@pytest.mark.parametrize("flags", [0, 1, 2, 4, 3, 5, 6, 7])
def test_known_flags_pass(flags: int) -> None:
    checked = check_flags(flags, Update.flags)
    assert isinstance(checked, Flags)
    assert int(checked) == flags


def test_flag_values() -> None:
    assert (Flags.FAIL_IF_BUSY, Flags.KEEP_FAILED, Flags.PRETEND) == (1, 2, 4)


@pytest.mark.parametrize(
    ("flags", "unknown"), [(8, 0x8), (9, 0x8), (16 | 4, 0x10), (1 << 63, 1 << 63), (0xFF, 0xF8)]
)
def test_unknown_flags_are_invalid_args(flags: int, unknown: int) -> None:
    with pytest.raises(InvalidArgs) as caught:
        check_flags(flags, Update.flags)
    assert str(caught.value) == f"unknown flags 0x{unknown:x}"
    assert caught.value.dbus_name == "org.freedesktop.DBus.Error.InvalidArgs"


def test_flags_outside_the_allowed_set_are_invalid_args() -> None:
    assert check_flags(1, Flags.FAIL_IF_BUSY) == Flags.FAIL_IF_BUSY
    with pytest.raises(InvalidArgs):
        check_flags(Flags.PRETEND, Flags.FAIL_IF_BUSY)


def error_classes() -> list[type[GnspawnError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, GnspawnError)
    ]


def test_every_error_class_is_known_by_its_bus_name() -> None:
    classes = error_classes()
    assert len(classes) >= 14
    for cls in classes:
        assert BY_DBUS_NAME[cls.dbus_name] is cls
    assert set(BY_DBUS_NAME.values()) == set(classes)


def test_bus_names_are_distinct_and_under_the_error_prefix() -> None:
    standard = {
        "org.freedesktop.DBus.Error.InvalidArgs",
        "org.freedesktop.DBus.Error.AccessDenied",
    }
    names = [cls.dbus_name for cls in error_classes()]
    assert len(names) == len(set(names))
    assert standard <= set(names)
    for name in set(names) - standard:
        assert name.startswith(ERROR_PREFIX)
        assert ERROR_PREFIX == "org.gnspawn1.Error."
        assert name.removeprefix(ERROR_PREFIX).isidentifier()


@pytest.mark.parametrize(
    "name",
    [
        "InvalidName",
        "NoSuchMachine",
        "MachineExists",
        "NotGentoo",
        "NoSuchJob",
        "NoSuchProfile",
        "NoSuchSnapshot",
        "Busy",
        "StorageFailed",
        "NotCancellable",
    ],
)
def test_documented_errors_exist(name: str) -> None:
    cls = BY_DBUS_NAME[ERROR_PREFIX + name]
    assert cls.__name__ == name
    assert cls.hint


def test_standard_errors() -> None:
    assert BY_DBUS_NAME["org.freedesktop.DBus.Error.InvalidArgs"] is errors.InvalidArgs
    assert BY_DBUS_NAME["org.freedesktop.DBus.Error.AccessDenied"] is errors.AccessDenied
