# Stand-in for bash-completion-r1.eclass.

get_bashcompdir() {
	echo "${EPREFIX}/usr/share/bash-completion/completions"
}

dobashcomp() {
	(
		insopts -m 0644
		insinto /usr/share/bash-completion/completions
		doins "${@}"
	)
}

newbashcomp() {
	(
		insopts -m 0644
		insinto /usr/share/bash-completion/completions
		newins "${@}"
	)
}
