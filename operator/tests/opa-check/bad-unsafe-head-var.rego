package corpus

deny contains msg if {
	input.request.spec.parameters.replicas > 10
}
