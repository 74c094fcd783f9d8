EAPI=8
DESCRIPTION="The dependency greeter-2 brings"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /usr/share/libgreet
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
