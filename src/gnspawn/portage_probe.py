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
  merge ROOT ANSWER OWNER PATH PKGDIR WAS FILES
                                FILES/mine and FILES/theirs merged into FILES/merged
                                (diff3 --merge) from the previous default: file PATH
                                of the newest binary package in PKGDIR of OWNER's
                                package of version WAS (the one installed before), or
                                when WAS is "" of the newest version before OWNER's
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import tempfile
from typing import Any

MOST_PENDING = 1000
MOST_BYTES = 1 << 20
"""Of a config file merged."""


def _settings(root: str) -> Any:
    os.environ["ROOT"] = root
    os.environ["SYSROOT"] = root
    os.environ["PORTAGE_CONFIGROOT"] = root
    import portage

    return portage.db[portage.root]


def config_files(root: str) -> dict[str, Any]:
    trees = _settings(root)  # before any other import of Portage
    import portage.util

    vardb = trees["vartree"].dbapi
    settings = vardb.settings
    protect = shlex.split(settings.get("CONFIG_PROTECT", ""))
    mask = shlex.split(settings.get("CONFIG_PROTECT_MASK", ""))
    checker = portage.util.ConfigProtect(root, protect, mask)
    pending: dict[str, list[str]] = {}
    for directory, names in portage.util.find_updated_config_files(root, protect):
        if len(pending) >= MOST_PENDING:
            break
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
        for path in paths:  # relative to the root, as Portage gives them back
            owners["/" + path.lstrip("/")] = link.mycpv
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
    trees = _settings(root)  # before any other import of Portage
    from portage.const import NEWS_LIB_PATH
    from portage.news import NewsManager

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


def merge(  # noqa: PLR0917 -- the question's arguments, as they come on its command line
    root: str, owner: str, path: str, pkgdir: str, was: str, files: str
) -> dict[str, Any]:
    """The three-way merge of `files`/mine (the admin's file) and `files`/theirs (the
    new default) from the previous default (see previous_default), into `files`/merged.
    diff3 runs here, in the sandbox: both files are the container's."""
    import subprocess

    found = previous_default(root, owner, path, pkgdir, was)
    if "error" in found:
        return found
    with open(os.path.join(files, "base"), "wb") as base:
        base.write(found.pop("content"))
    argv = ["diff3", "--merge", *(os.path.join(files, n) for n in ("mine", "base", "theirs"))]
    done = subprocess.run(argv, capture_output=True, check=False)  # noqa: S603 -- fixed argv
    if done.returncode == 1:
        return {**found, "conflict": True}
    if done.returncode != 0:
        return {"error": f"diff3 failed: {done.stderr.decode(errors='replace').strip()}"}
    with open(os.path.join(files, "merged"), "wb") as merged:
        merged.write(done.stdout)
    return {**found, "conflict": False}


def previous_default(
    root: str, owner: str, path: str, pkgdir: str, was: str = ""
) -> dict[str, Any]:
    """The file `path` as the binary package in `pkgdir` of the version of `owner`'s
    package that was installed before `owner`: version `was` when it is known, else the
    newest before `owner`'s. The default the admin's file was made from."""
    trees = _settings(root)  # before any other import of Portage
    from portage.gpkg import gpkg
    from portage.versions import catpkgsplit, vercmp

    split = catpkgsplit(owner)
    if split is None:
        return {"error": f"{owner!r} names no package version"}
    category, name, version, revision = split
    installed = version if revision == "r0" else f"{version}-{revision}"
    candidates: list[tuple[str, float, str]] = []
    for directory in (os.path.join(pkgdir, category, name), os.path.join(pkgdir, category)):
        try:
            files = os.listdir(directory)
        except OSError:
            continue
        for file in files:
            if not file.endswith(".gpkg.tar") or not file.startswith(f"{name}-"):
                continue
            stem = file.removesuffix(".gpkg.tar")
            found = catpkgsplit(f"{category}/{stem}")
            if found is None:  # NAME-VERSION-BUILDID: the build id goes
                stem = stem.rpartition("-")[0]
                found = catpkgsplit(f"{category}/{stem}")
            if found is None or found[1] != name:
                continue
            other = found[2] if found[3] == "r0" else f"{found[2]}-{found[3]}"
            if other == was if was else vercmp(other, installed) < 0:
                full = os.path.join(directory, file)
                candidates.append((other, os.path.getmtime(full), full))
    if not candidates:
        which = f"{category}/{name}-{was}" if was else f"{category}/{name} before {owner}"
        return {"error": f"no binary package of {which}"}

    def order(a: tuple[str, float, str], b: tuple[str, float, str]) -> int:
        return int(vercmp(a[0], b[0])) or (a[1] > b[1]) - (a[1] < b[1])

    newest = max(candidates, key=functools.cmp_to_key(order))[2]
    with tempfile.TemporaryDirectory() as scratch:
        gpkg(trees["vartree"].settings, None, newest).decompress(scratch)
        source = os.path.join(scratch, path.lstrip("/"))
        if not os.path.isfile(source) or os.path.islink(source):
            return {"error": f"{path} is no regular file of {os.path.basename(newest)}"}
        with open(source, "rb") as binary:
            content = binary.read(MOST_BYTES + 1)
    if len(content) > MOST_BYTES:
        return {"error": f"{path} in {os.path.basename(newest)} is too big to merge"}
    return {"package": os.path.basename(newest), "content": content}


def main(argv: list[str]) -> int:
    question, root, answer, *rest = argv
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # what Portage prints is log, not answer
    if question == "config-files":
        result = config_files(root)
    elif question == "news":
        result = news(root)
    elif question == "merge":
        result = merge(root, *rest)
    else:
        print(f"unknown question {question!r}", file=sys.stderr)
        return 2
    with open(answer, "w", encoding="utf-8") as file:
        json.dump(result, file)
    sys.stdout = real_stdout
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
