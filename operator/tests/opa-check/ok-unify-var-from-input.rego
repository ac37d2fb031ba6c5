package corpus

region := r if {
	r = input.request.spec.parameters.region
}
