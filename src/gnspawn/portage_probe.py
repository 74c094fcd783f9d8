# ruff: noqa: PLC0415 -- Portage reads ROOT and PORTAGE_CONFIGROOT as it is imported
"""Questions only Portage can answer about a root, answered by Portage's own code.

gnspawnd runs this file, never imports it: `python -I -c <this file> QUESTION ROOT
ANSWER [ARG...]` inside the sandbox of the machine's root (gnspawn.jobs.probe), since
answering means reading the root's configuration, profile and package database, all of
which the container writes. The answer is JSON, written to the file ANSWER; what
Portage prints goes to the job's log. It imports nothing of gnspawn: the sandbox need
not see gnspawn's sources, only the Python and Portage that emerge runs on.

Questions:
  config-files ROOT ANSWER      the pending ._cfg????_ files under CONFIG_PROTECT
                                (not CONFIG_PROTECT_MASK), with the package owning each
  news ROOT ANSWER              the unread news items relevant to the root, by
                                repository (Portage's news manager updates its lists)
  extract ROOT ANSWER PKG PATH OUT   the file PATH of binary package PKG, copied to OUT
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any

MOST_PENDING = 1000


def _settings(root: str) -> Any:
    os.environ["ROOT"] = root
    os.environ["SYSROOT"] = root
    os.environ["PORTAGE_CONFIGROOT"] = root
    import portage

    return portage.db[portage.root]


def config_files(root: str) -> dict[str, Any]:
    import portage.util

    trees = _settings(root)
    vardb = trees["vartree"].dbapi
    settings = vardb.settings
    protect = portage.util.shlex_split(settings.get("CONFIG_PROTECT", ""))
    mask = portage.util.shlex_split(settings.get("CONFIG_PROTECT_MASK", ""))
    checker = portage.util.ConfigProtect(root, protect, mask)
    pending: dict[str, list[str]] = {}
    for directory, names in portage.util.find_updated_config_files(root, protect):
        found = [directory] if names is None else [os.path.join(directory, n) for n in names]
        for path in found:
            parent, name = os.path.split(path)
            target = os.path.join(parent, name[len("._cfg0000_") :])
            if not checker.isprotected(target):
                continue
            pending.setdefault(target, []).append(path)
            if len(pending) >= MOST_PENDING:
                break
    relative = {target[len(root.rstrip("/")) :]: cfgs for target, cfgs in pending.items()}
    owners: dict[str, str] = {}
    for link, paths in vardb._owners.get_owners(list(relative)).items():
        for path in paths:
            owners[path] = link.mycpv
    return {
        "protect": protect,
        "mask": mask,
        "pending": [
            {
                "target": target,
                "cfg": sorted(cfg[len(root.rstrip("/")) :] for cfg in cfgs),
                "owner": str(owners.get(target, "")),
            }
            for target, cfgs in sorted(relative.items())
        ],
    }


def news(root: str) -> dict[str, Any]:
    from portage.const import NEWS_LIB_PATH
    from portage.news import NewsManager

    trees = _settings(root)
    portdb, vardb = trees["porttree"].dbapi, trees["vartree"].dbapi
    if not portdb.settings.profile_path:
        return {"error": "the root has no valid profile: news cannot be judged"}
    unread_path = os.path.join(vardb.settings["EROOT"], NEWS_LIB_PATH, "news")
    unread: dict[str, list[str]] = {}
    for repo in portdb.getRepositories():
        manager = NewsManager(portdb, vardb, os.path.join("metadata", "news"), unread_path)
        try:
            manager.updateItems(repo)
        except OSError:
            continue  # the repository has no news
        path = os.path.join(unread_path, f"news-{repo}.unread")
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                items = [line.strip() for line in file if line.strip()]
        except OSError:
            continue
        if items:
            unread[repo] = items[:MOST_PENDING]
    return {"unread": unread}


def extract(root: str, package: str, path: str, out: str) -> dict[str, Any]:
    from portage.binpkg import get_binpkg_format
    from portage.gpkg import gpkg

    trees = _settings(root)
    if get_binpkg_format(package) != "gpkg":
        return {"error": f"{package}: only gpkg binary packages are read"}
    with tempfile.TemporaryDirectory(dir=os.path.dirname(out)) as scratch:
        gpkg(trees["vartree"].settings, None, package).decompress(scratch)
        source = os.path.join(scratch, "image", path.lstrip("/"))
        if not os.path.isfile(source) or os.path.islink(source):
            return {"error": f"{path} is no regular file in {os.path.basename(package)}"}
        shutil.copyfile(source, out)
    return {"extracted": out}


def main(argv: list[str]) -> int:
    question, root, answer, *rest = argv
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # what Portage prints is log, not answer
    if question == "config-files":
        result = config_files(root)
    elif question == "news":
        result = news(root)
    elif question == "extract":
        result = extract(root, *rest)
    else:
        print(f"unknown question {question!r}", file=sys.stderr)
        return 2
    with open(answer, "w", encoding="utf-8") as file:
        json.dump(result, file)
    sys.stdout = real_stdout
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
