package corpus

deny contains msg if {
	name := input.request.metadata.name
	not regex.match(`^[a-z][a-z0-9-]*$`, name)
	msg := sprintf("bad name %q", [name])
}
