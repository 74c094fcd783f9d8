# Stand-in for shell-completion.eclass: bash-completion-r1 and zsh.

inherit bash-completion-r1

get_zshcompdir() {
	echo "${EPREFIX}/usr/share/zsh/site-functions"
}

dozshcomp() {
	(
		insopts -m 0644
		insinto /usr/share/zsh/site-functions
		doins "${@}"
	)
}

newzshcomp() {
	(
		insopts -m 0644
		insinto /usr/share/zsh/site-functions
		newins "${@}"
	)
}
