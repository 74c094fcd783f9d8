"""News items without the daemon: item names, GLEP 42 parsing, a root's news lists
read and marked read."""

from __future__ import annotations

from pathlib import Path

import pytest

from gnspawn.config import PortageConfig
from gnspawn.errors import InvalidArgs, NoSuchNewsItem
from gnspawn.jobs import news

ITEM = "2026-12-01-chatty-moves"
OTHER = "2026-11-02-hello+world_2"
TEXT = """Title: chatty moves its files
Author: A Developer <dev@example.org>
Title: a second title is no title
Posted: 2026-12-01
News-Item-Format: 2.0
Display-If-Installed: app-misc/chatty

Move them first.

Then update.
"""


@pytest.mark.parametrize("name", [ITEM, OTHER, "2026-01-01-x"])
def test_item_names(name: str) -> None:
    assert news.valid_name(name)
    assert news.check_names([name]) == [name]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        f"../{ITEM}",
        f"{ITEM}/../x",
        f"{ITEM}/x",
        "/etc/shadow",
        f"{ITEM}\n",
        "2026-12-01-",
        "2026-12-01-.hidden",
        "26-12-01-x",
        "chatty-moves",
        "2026-12-01-" + "x" * 81,
    ],
)
def test_what_names_no_item_is_invalid_args(name: str) -> None:
    assert not news.valid_name(name)
    with pytest.raises(InvalidArgs):
        news.check_names([ITEM, name])


def test_parse_takes_the_first_of_each_header_and_the_body_after_them() -> None:
    headers, body = news.parse(TEXT)
    assert headers["title"] == "chatty moves its files"
    assert headers["display-if-installed"] == "app-misc/chatty"
    assert headers["news-item-format"] == "2.0"
    assert body == "Move them first.\n\nThen update.\n"
    assert news.parse("Title: only headers\n") == ({"title": "only headers"}, "")
    assert news.parse("Title: x\r\n\r\nbody") == ({"title": "x"}, "body\n")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "profiles").mkdir(parents=True)
    (repo / "profiles" / "repo_name").write_text("demo\n")
    for name, text in ((ITEM, TEXT), (OTHER, "News-Item-Format: 2.0\n\nNo title.\n")):
        (repo / "metadata" / "news" / name).mkdir(parents=True)
        (repo / "metadata" / "news" / name / f"{name}.en.txt").write_text(text)
    return repo


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "var/lib/gentoo/news").mkdir(parents=True)
    return root


def lists(root: Path) -> dict[str, str]:
    directory = root / "var/lib/gentoo/news"
    return {path.name: path.read_text() for path in sorted(directory.iterdir())}


def test_items_come_from_the_hosts_repositories_only(repo: Path) -> None:
    config = PortageConfig(repos=(repo,))
    found = {"demo": [ITEM, OTHER, "2020-01-01-nosuch", "../../etc", ITEM], "other": [ITEM]}

    items = news.items(config, found)

    assert [(i.name, i.repository, i.title) for i in items] == [
        (OTHER, "demo", OTHER),  # no title: its name stands for it
        (ITEM, "demo", "chatty moves its files"),
    ]
    assert items[1].body == "Move them first.\n\nThen update.\n"


def test_mark_read_moves_items_from_unread_to_read(repo: Path, root: Path) -> None:
    config = PortageConfig(repos=(repo,))
    (root / "var/lib/gentoo/news/news-demo.unread").write_text(f"{ITEM}\n{OTHER}\njunk\n")

    assert [i.name for i in news.unread(root, config)] == [OTHER, ITEM]
    marked = news.mark_read(root, config, [ITEM])

    assert [i.name for i in marked] == [ITEM]
    assert lists(root) == {"news-demo.read": f"{ITEM}\n", "news-demo.unread": f"{OTHER}\njunk\n"}
    assert [i.name for i in news.mark_read(root, config, [])] == [OTHER]
    assert lists(root) == {"news-demo.read": f"{ITEM}\n{OTHER}\n", "news-demo.unread": "junk\n"}
    assert news.mark_read(root, config, []) == []


def test_an_item_not_unread_is_no_such_news_item_and_nothing_changes(
    repo: Path, root: Path
) -> None:
    config = PortageConfig(repos=(repo,))
    (root / "var/lib/gentoo/news/news-demo.unread").write_text(f"{ITEM}\n")
    before = lists(root)

    for names in ([OTHER], [ITEM, OTHER], ["2020-01-01-nosuch"]):
        with pytest.raises(NoSuchNewsItem):
            news.mark_read(root, config, names)

    assert lists(root) == before


def test_a_link_the_container_planted_is_replaced_never_written_through(
    repo: Path, root: Path, tmp_path: Path
) -> None:
    config = PortageConfig(repos=(repo,))
    secret = tmp_path / "secret"
    secret.write_text("SECRET\n")
    (root / "var/lib/gentoo/news/news-demo.unread").write_text(f"{ITEM}\n")
    (root / "var/lib/gentoo/news/news-demo.read").symlink_to(secret)

    news.mark_read(root, config, [ITEM])

    assert secret.read_text() == "SECRET\n"
    assert lists(root) == {"news-demo.read": f"{ITEM}\n", "news-demo.unread": ""}


def test_news_is_looked_for_only_when_a_repository_has_an_item(repo: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "metadata" / "news").mkdir(parents=True)
    assert news._any_news(PortageConfig(repos=(empty, repo)))
    assert not news._any_news(PortageConfig(repos=(empty, tmp_path / "nosuch")))
