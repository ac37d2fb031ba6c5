package corpus

deny contains msg if {
	some c in input.request.spec.parameters.containers
	not c.resources.limits.memory
	msg := sprintf("container %s has no memory limit", [c.name])
}
