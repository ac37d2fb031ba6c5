package corpus

owner := o if {
	{"owner": o} = input.request.metadata.labels
}
