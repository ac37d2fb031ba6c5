package corpus

warn contains msg if {
	replicas := input.request.spec.parameters.replicas
	replicas > 10
	msg := sprintf("%d replicas", [replicas])
}
