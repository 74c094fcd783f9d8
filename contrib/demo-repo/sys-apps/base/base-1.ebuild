# The smallest @system: it makes a root a Gentoo root.
EAPI=8
DESCRIPTION="Base files of the gnspawn demo system"
SLOT="0"
KEYWORDS="amd64"
S=${WORKDIR}

src_install() {
	insinto /etc
	echo "Gentoo Base System release 2.17" > "${T}/gentoo-release" || die
	doins "${T}/gentoo-release"
	insinto /usr/lib
	printf 'NAME=Gentoo\nID=gentoo\nPRETTY_NAME="Gentoo (gnspawn demo)"\n' > "${T}/os-release" || die
	doins "${T}/os-release"
	dosym ../usr/lib/os-release /etc/os-release
}
