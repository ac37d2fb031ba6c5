package corpus

deny contains msg if {
	some repo
	team := input.request.spec.team
	team := input.request.metadata.labels.team
	input.request.spec.parameters.tags[_] == key
	msg := sprintf("%s: tag %s", [team, key])
}
