EAPI=8
DESCRIPTION="A package with an upgrade pending"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_compile() {
	echo "hello ${PV}" > hello.txt || die
}

src_install() {
	insinto /usr/share/hello
	doins hello.txt
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
