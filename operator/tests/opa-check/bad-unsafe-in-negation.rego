package corpus

deny contains "no x" if {
	not input.request.spec.parameters[x]
}
