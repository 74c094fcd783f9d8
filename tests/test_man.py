"""The man pages say what the programs and the configuration accept, and render cleanly;
the README's reference tables say the same.

Each check reads its truth from the code: gnctl's argparse parser, gnspawnd's parser,
the SETTINGS table of the configuration, the journal fields, the D-Bus error names and
the job phases. A verb, option, key or exit status added there (or removed) fails here
until the page and the README say so.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from unittest import mock

import pytest

from gnspawn import daemon, errors
from gnspawn import log as journal
from gnspawn.config import MACHINE_SETTINGS, SECTIONS, SETTINGS, MachineConfig
from gnspawn.ctl import main as ctl
from gnspawn.names import Phase

MAN = Path(__file__).resolve().parent.parent / "man"
PAGES = {"gnctl.1": "gnctl", "gnspawnd.8": "gnspawnd", "gnspawn.toml.5": "gnspawn.toml"}
HELP = ("-h", "--help")

# roff's named characters and escapes, as a reader sees them
CHARACTERS = {
    "-": "-", "(dq": '"', "(aq": "'", "(lq": '"', "(rq": '"', "(em": "--", "(en": "-",
    "(->": "->", "(mc": "u", "&": "", "c": "", "e": "\\", " ": " ", "~": " ", "|": "", "^": "",
}  # fmt: skip
ESCAPE = re.compile(r"\\(f(?:\(..|\[[^]]*\]|.)|\(..|\[[^]]*\]|.)")
FONT_MACROS = {
    "B": "B", "I": "I", "SB": "B", "BR": "BR", "RB": "RB", "BI": "BI", "IB": "IB",
    "IR": "IR", "RI": "RI",
}  # fmt: skip


@dataclasses.dataclass
class Entry:
    """One tagged paragraph (.TP) of a page: its tag and body as plain text."""

    section: str
    subsection: str
    depth: int
    tag: str = ""
    body: str = ""
    bold: list[str] = dataclasses.field(default_factory=list)
    parent: Entry | None = None
    tagging: bool = True

    @property
    def top(self) -> Entry:
        return self if self.parent is None else self.parent.top


def inline(text: str, font: str = "R") -> tuple[str, list[str]]:
    """Plain text of a roff text line, and the phrases set in bold."""
    out: list[str] = []
    bold: list[str] = []
    current: list[str] = []
    pos = 0

    def flush() -> None:
        if current:
            phrase = "".join(current).strip()
            if phrase:
                bold.append(phrase)
            current.clear()

    for match in ESCAPE.finditer(text):
        chunk = text[pos : match.start()]
        out.append(chunk)
        if font == "B":
            current.append(chunk)
        pos = match.end()
        name = match.group(1)
        if name.startswith("f"):
            new = name[1:].strip("([]") or "R"
            new = "R" if new == "P" else new[0]
            if new != font and font == "B":
                flush()
            font = new
            continue
        char = CHARACTERS.get(name)
        assert char is not None, f"unknown roff escape \\{name} in {text!r}"
        out.append(char)
        if font == "B":
            current.append(char)
    tail = text[pos:]
    out.append(tail)
    if font == "B":
        current.append(tail)
    flush()
    return "".join(out), bold


def roff_args(args: str) -> list[str]:
    """A macro's arguments: words, or "quoted words" with "" for a quote."""
    return [
        m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
        for m in re.finditer(r'"((?:[^"]|"")*)"?|(\S+)', args)
    ]


def macro_text(name: str, args: str) -> tuple[str, list[str]]:
    """The text of .B, .I, .BR and their kin: arguments alternate between two fonts."""
    words = roff_args(args)
    fonts = FONT_MACROS[name]
    if len(fonts) == 1:
        return inline(" ".join(words), fonts)
    text: list[str] = []
    bold: list[str] = []
    for i, word in enumerate(words):
        plain, emphasised = inline(word, fonts[i % 2])
        text.append(plain)
        bold += emphasised
    return "".join(text), bold


def entries(page: str) -> list[Entry]:
    """Every .TP paragraph of a page, nested ones (inside .RS) with their parent."""
    found: list[Entry] = []
    section = subsection = ""
    depth = 0
    stack: list[Entry] = []
    for raw in (MAN / page).read_text(encoding="utf-8").splitlines():
        if raw.startswith((".", "'")):
            name, _, args = raw[1:].strip().partition(" ")
            if name in ("SH", "SS"):
                heading = inline(" ".join(roff_args(args)))[0]
                section, subsection = (heading, "") if name == "SH" else (section, heading)
                stack.clear()
                depth = 0
            elif name == "RS":
                depth += 1
            elif name == "RE":
                depth -= 1
                while stack and stack[-1].depth > depth:
                    stack.pop()
            elif name == "TP":
                while stack and stack[-1].depth >= depth:
                    stack.pop()
                entry = Entry(section, subsection, depth, parent=stack[-1] if stack else None)
                found.append(entry)
                stack.append(entry)
            elif name == "TQ":
                if stack:
                    stack[-1].tagging = True
            elif name in ("PP", "P", "LP"):
                while stack and stack[-1].depth >= depth:
                    stack.pop()
            elif name in FONT_MACROS:
                text, bold = macro_text(name, args)
                feed(stack, text, bold)
            continue
        text, bold = inline(raw)
        feed(stack, text, bold)
    return found


def feed(stack: list[Entry], text: str, bold: list[str]) -> None:
    """A line after .TP (or .TQ) is the innermost entry's tag; others go to the bodies of
    the open entries, the parents of a nested one included."""
    for i, entry in enumerate(reversed(stack)):
        if i == 0 and entry.tagging:
            entry.tag = f"{entry.tag} {text}".strip()
            entry.tagging = False
        else:
            entry.body = f"{entry.body} {text}".strip()
        entry.bold += bold


def mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def in_section(found: list[Entry], section: str) -> list[Entry]:
    return [e for e in found if e.section.upper() == section.upper()]


# gnctl


def gnctl_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = ctl.build_parser()
    verbs: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            verbs.update(action.choices)
    assert verbs, "gnctl's parser has no verbs"
    return parser, verbs


def options(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            yield from action.option_strings


GNCTL = entries("gnctl.1")
PARSER, VERBS = gnctl_parser()
VERB_OPTIONS = sorted(
    {(verb, opt) for verb, sub in VERBS.items() for opt in options(sub) if opt not in HELP}
)


def verb_entry(verb: str) -> Entry | None:
    for entry in in_section(GNCTL, "COMMANDS"):
        if entry.parent is None and entry.tag.split()[:1] == [verb] and verb in entry.bold:
            return entry
    return None


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_gnctl_verb_is_documented(verb: str) -> None:
    assert verb_entry(verb), f"gnctl.1 COMMANDS has no entry for the verb {verb!r}"


@pytest.mark.parametrize("option", sorted(options(PARSER)))
def test_gnctl_global_option_is_documented(option: str) -> None:
    tagged = [e for e in in_section(GNCTL, "OPTIONS") if mentions(e.tag, option)]
    assert tagged, f"gnctl.1 OPTIONS has no entry for gnctl {option}"


@pytest.mark.parametrize(("verb", "option"), VERB_OPTIONS)
def test_gnctl_verb_option_is_documented(verb: str, option: str) -> None:
    """Under the verb in COMMANDS, or in OPTIONS with the verb named in bold."""
    under_verb = [
        e
        for e in in_section(GNCTL, "COMMANDS")
        if e.parent is not None and e.top is verb_entry(verb) and mentions(e.tag, option)
    ]
    in_options = [
        e
        for e in in_section(GNCTL, "OPTIONS")
        if mentions(e.tag, option) and any(p.split()[0] == verb for p in e.bold if p.split())
    ]
    assert under_verb or in_options, (
        f"gnctl.1 does not document 'gnctl {verb} {option}': give it an entry in OPTIONS "
        f"that names {verb} in bold, or one nested under {verb} in COMMANDS"
    )


def test_gnctl_options_are_not_documented_for_verbs_without_them() -> None:
    """An OPTIONS entry that names verbs names only verbs that take the option."""
    wrong = []
    for entry in in_section(GNCTL, "OPTIONS"):
        tagged = set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", entry.tag))
        named = {p.split()[0] for p in entry.bold if p.split() and p.split()[0] in VERBS}
        for verb in named:
            takes = set(options(VERBS[verb]))
            wrong += [f"{verb} {o}" for o in sorted(tagged - takes)]
    assert not wrong, f"gnctl.1 names options for verbs that do not take them: {wrong}"


def exit_codes(text: str, pattern: str) -> set[str]:
    """The exit codes a --help epilog lists."""
    return set(re.findall(pattern, text))


def test_gnctl_exit_status_matches_help() -> None:
    from_help = exit_codes((PARSER.epilog or "").split("exit status:")[-1], r"(?m)^\s+(\d+)\s")
    assert from_help, "gnctl --help no longer lists exit codes"
    documented = {e.tag for e in in_section(GNCTL, "EXIT STATUS")}
    assert documented == from_help


def json_keys() -> dict[str, set[str]]:
    """The keys of the records each cmd_* function of gnctl builds for --json."""
    tree = ast.parse(inspect.getsource(ctl))
    keys: dict[str, set[str]] = {}
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not func.name.startswith("cmd_"):
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Dict)
                and len(node.keys) > 1
                and all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys)
            ):
                verb = func.name.removeprefix("cmd_")
                keys.setdefault(verb, set()).update(
                    k.value
                    for k in node.keys
                    if isinstance(k, ast.Constant) and isinstance(k.value, str)
                )
    return keys


def test_gnctl_json_keys_are_documented() -> None:
    keys = json_keys()
    assert {"list", "jobs", "snapshots", "profiles"} <= set(keys)
    listed = {e.tag: e for e in in_section(GNCTL, "JSON OUTPUT")}
    missing = {}
    for verb, names in keys.items():
        entry = listed.get(verb)
        documented = set(entry.bold) if entry else set()
        if names - documented:
            missing[verb] = sorted(names - documented)
    assert not missing, f"gnctl.1 JSON OUTPUT lacks keys (in bold under the verb): {missing}"


# gnspawnd


class Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def gnspawnd_parser() -> argparse.ArgumentParser:
    """The parser gnspawnd builds, caught as it parses."""

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> NoReturn:
        raise Captured(self)

    try:
        with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
            daemon.parse_args([])
    except Captured as caught:
        return caught.parser
    raise AssertionError("gnspawnd's parse_args no longer parses with argparse")


GNSPAWND = entries("gnspawnd.8")
DAEMON_PARSER = gnspawnd_parser()


@pytest.mark.parametrize("option", sorted(options(DAEMON_PARSER)))
def test_gnspawnd_option_is_documented(option: str) -> None:
    tagged = [e for e in in_section(GNSPAWND, "OPTIONS") if mentions(e.tag, option)]
    assert tagged, f"gnspawnd.8 OPTIONS has no entry for gnspawnd {option}"


def test_gnspawnd_exit_status_matches_help() -> None:
    from_help = exit_codes(DAEMON_PARSER.epilog or "", r"\b(\d+) [a-z]")
    assert {"0", "78"} <= from_help
    documented = {e.tag for e in in_section(GNSPAWND, "EXIT STATUS")}
    assert documented == from_help


def test_gnspawnd_journal_fields_are_documented() -> None:
    fields = set(re.findall(r"\bGNSPAWN_[A-Z_]+\b", inspect.getsource(journal)))
    assert "GNSPAWN_JOB" in fields
    documented = {e.tag for e in in_section(GNSPAWND, "LOGGING")}
    assert fields <= documented, f"gnspawnd.8 LOGGING lacks {sorted(fields - documented)}"


def test_gnspawnd_error_names_are_documented() -> None:
    text = " ".join(e.body for e in GNSPAWND) + (MAN / "gnspawnd.8").read_text()
    names = {cls.dbus_name.rsplit(".", 1)[1] for cls in errors.GnspawnError.__subclasses__()}
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", text))
    assert not missing, f"gnspawnd.8 does not name the D-Bus errors {missing}"


# gnspawn.toml


def toml_value(value: object) -> str:
    """A default as it is written in TOML; "unset" for a key whose absence means
    another's value."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def default(cls: type[Any], key: str) -> object:
    field = {f.name: f for f in dataclasses.fields(cls)}[key]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


CONFIG = entries("gnspawn.toml.5")
KEYS = [
    *((f"[{s}]", k, SECTIONS[s]) for s, table in SETTINGS.items() for k in table),
    *(("[machines.NAME]", k, MachineConfig) for k in MACHINE_SETTINGS),
]


@pytest.mark.parametrize(("section", "key", "cls"), KEYS, ids=[f"{s}{k}" for s, k, _ in KEYS])
def test_config_key_is_documented_with_its_default(section: str, key: str, cls: type) -> None:
    tagged = [e for e in in_section(CONFIG, section) if e.tag == key]
    assert tagged, f"gnspawn.toml.5 has no entry for {key} under {section}"
    expected = f"Default: {toml_value(default(cls, key))}"
    assert expected in tagged[0].body, f"{section} {key}: {tagged[0].body!r} lacks {expected!r}"


def test_config_page_heads_each_table_as_the_file_spells_it() -> None:
    headings = {e.section for e in CONFIG if e.section.startswith("[")}
    assert headings == {section for section, _, _ in KEYS}


def test_config_page_documents_no_other_keys() -> None:
    known = {(s, k) for s, k, _ in KEYS}
    documented = {(e.section.lower(), e.tag) for e in CONFIG if e.section.startswith("[")}
    assert documented == {(s.lower(), k) for s, k in known}


# every page


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_header_names_the_page(page: str) -> None:
    name, section = page.rsplit(".", 1)
    first = (MAN / page).read_text(encoding="utf-8").splitlines()[0]
    assert shlex.split(first)[:3] == [".TH", name.upper(), section]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_renders_without_warnings(page: str) -> None:
    groff = shutil.which("groff")
    assert groff, "groff is not installed (Debian package groff-base)"
    result = subprocess.run(
        [groff, "-man", "-ww", "-Tutf8", "-z", str(MAN / page)], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    # As lintian checks a page: man's own preprocessing, at 80 columns, so that a line
    # too long to break shows up too.
    man = shutil.which("man")
    assert man, "man is not installed (Debian package man-db)"
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANROFFSEQ": "", "MANWIDTH": "80"}
    result = subprocess.run(
        [man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(MAN / page)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_refers_to_the_other_pages(page: str) -> None:
    text = (MAN / page).read_text(encoding="utf-8").split('.SH "SEE ALSO"', 1)[1]
    for other in PAGES:
        if other != page:
            name, section = other.rsplit(".", 1)
            assert f".BR {name} ({section})" in text, f"{page}: SEE ALSO lacks {name}({section})"


# the README's reference tables

README = (MAN.parent / "README.md").read_text(encoding="utf-8")
OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")


def readme_table(header: str) -> list[list[str]]:
    """The cells of each row of the README's table whose first column is `header`."""
    lines = README.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith(f"| {header} |")]
    assert len(start) == 1, f"the README has {len(start)} tables headed {header!r}"
    rows = []
    for line in lines[start[0] + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_readme_lists_each_verb_with_exactly_its_options() -> None:
    listed = {
        command.strip("`").split()[1]: set(OPTION.findall(flags))
        for command, flags, _ in readme_table("command")
    }
    expected = {verb: set(options(sub)) - set(HELP) for verb, sub in VERBS.items()}
    assert listed == expected


def test_readme_lists_every_job_phase() -> None:
    listed = [row[0].strip("`") for row in readme_table("phase")]
    assert sorted(listed) == sorted(Phase)


def test_readme_configuration_table_has_every_key_and_no_other() -> None:
    listed = set()
    for row in readme_table("key"):
        section = re.match(r"`(\[[^]]+\]) ", row[0])
        assert section, f"README configuration row without a [section]: {row[0]}"
        listed |= {(section.group(1), key) for key in re.findall(r"(\w+)`", row[0])}
    assert listed == {(section, key) for section, key, _ in KEYS}
