EAPI=8
DESCRIPTION="A package whose upgrade brings a new dependency"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /usr/share/greeter
	echo "${PV}" > "${T}/version" || die
	doins "${T}/version"
}
