package corpus

deny contains {"id": "replicas", "msg": msg} if {
	r := input.request.spec.parameters.replicas
	r > 20
	msg := sprintf("%d replicas is too many", [r])
}
