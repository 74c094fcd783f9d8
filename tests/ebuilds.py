"""The test repository's packages that tests write as they need them: a plain package,
a shared library whose soname is its major version and a program linked against it, a
package with a config file under CONFIG_PROTECT. Each writes app-misc/NAME/NAME-V.ebuild
into `repo`."""

from __future__ import annotations

import hashlib
from pathlib import Path

LIBRARY = """EAPI=8
DESCRIPTION="A shared library whose soname is its major version"
SLOT="0"
KEYWORDS="amd64"
S=${{WORKDIR}}

src_compile() {{
	echo 'int {name}(void) {{ return {version}; }}' > lib.c || die
	gcc -shared -fPIC -Wl,-soname,lib{name}.so.{version} -o lib{name}.so.{version} lib.c || die
}}

src_install() {{
	dolib.so lib{name}.so.{version}
	dosym lib{name}.so.{version} /usr/$(get_libdir)/lib{name}.so
	insinto /usr/share/{name}
	echo {version} > "${{T}}/version" || die
	doins "${{T}}/version"
	{extra}
}}
"""

CONSUMER = """EAPI=8
DESCRIPTION="A program linked against a library of the test"
SLOT="0"
KEYWORDS="amd64"
S=${{WORKDIR}}
RDEPEND="app-misc/{library}"
DEPEND="${{RDEPEND}}"

src_compile() {{
	if [[ -e ${{ESYSROOT}}/usr/share/{library}/break-consumers ]]; then
		die "{name} does not build against this {library}"
	fi
	echo 'int {library}(void); int main(void) {{ return {library}(); }}' > main.c || die
	gcc -o {name} main.c -L"${{ESYSROOT}}/usr/$(get_libdir)" {link} || die
}}

src_install() {{
	dobin {name}
}}
"""

PLAIN = """EAPI=8
DESCRIPTION="A package of the test"
SLOT="0"
KEYWORDS="amd64"
S=${{WORKDIR}}
RDEPEND="{depend}"
{fetch}
src_unpack() {{ :; }}

src_install() {{
	insinto /usr/share/{name}
	echo {version} > "${{T}}/version" || die
	doins "${{T}}/version"
}}
"""


def write_library(repo: Path, name: str, version: int, *, breaks_consumers: bool = False) -> None:
    extra = ""
    if breaks_consumers:
        extra = f'touch "${{ED}}/usr/share/{name}/break-consumers" || die'
    write_ebuild(repo, name, version, LIBRARY.format(name=name, version=version, extra=extra))


def write_consumer(repo: Path, name: str, library: str, *, link: str = "") -> None:
    text = CONSUMER.format(name=name, library=library, link=link or f"-l{library}")
    write_ebuild(repo, name, 1, text)


def write_plain(
    repo: Path, name: str, version: int, *, depend: str = "", src_uri: str = ""
) -> None:
    fetch = ""
    if src_uri:
        fetch = f'SRC_URI="{src_uri}"\nRESTRICT="mirror"\n'
        distfile = src_uri.rsplit("/", 1)[1]
        write_manifest(repo, name, distfile, b"never served\n")
    write_ebuild(
        repo, name, version, PLAIN.format(name=name, version=version, depend=depend, fetch=fetch)
    )


def write_ebuild(repo: Path, name: str, version: int, text: str) -> None:
    directory = repo / "app-misc" / name
    directory.mkdir(exist_ok=True)
    (directory / f"{name}-{version}.ebuild").write_text(text)


def write_manifest(repo: Path, name: str, distfile: str, content: bytes) -> None:
    """The Manifest a thin-manifest repository needs for a package with sources."""
    digests = " ".join(
        f"{label} {hashlib.new(algorithm, content).hexdigest()}"
        for label, algorithm in (("BLAKE2B", "blake2b"), ("SHA512", "sha512"))
    )
    manifest = repo / "app-misc" / name / "Manifest"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(f"DIST {distfile} {len(content)} {digests}\n")


CONF = """EAPI=8
DESCRIPTION="A package with a config file under CONFIG_PROTECT"
SLOT="0"
KEYWORDS="amd64"
S=${{WORKDIR}}
src_install() {{
	insinto /etc/conf
	printf '{content}' > "${{T}}/foo.conf" || die
	doins "${{T}}/foo.conf"
}}
"""


def write_conf(repo: Path, version: int, content: str) -> None:
    """app-misc/conf-VERSION, installing /etc/conf/foo.conf with `content`."""
    ebuilds = repo / "app-misc" / "conf"
    ebuilds.mkdir(exist_ok=True)
    text = CONF.format(content=content.replace("\n", "\\n"))
    (ebuilds / f"conf-{version}.ebuild").write_text(text)
