# Stand-in for systemd.eclass: units go to systemd_get_systemunitdir.

systemd_get_systemunitdir() {
	echo "${EPREFIX}/usr/lib/systemd/system"
}

systemd_dounit() {
	(
		insopts -m 0644
		insinto /usr/lib/systemd/system
		doins "${@}"
	)
}
