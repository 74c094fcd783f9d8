"""gnctl: the command-line client of gnspawnd."""
