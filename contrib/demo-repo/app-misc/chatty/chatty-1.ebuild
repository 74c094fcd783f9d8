EAPI=8
DESCRIPTION="Installs fine; its upgrade prints a lot while it compiles"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /usr/share/chatty
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
