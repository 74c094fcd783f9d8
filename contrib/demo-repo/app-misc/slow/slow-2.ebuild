EAPI=8
DESCRIPTION="An upgrade whose compile takes 3 s: what a fleet should compile once"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_compile() {
	sleep 3 || die
}

src_install() {
	insinto /usr/share/slow
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
