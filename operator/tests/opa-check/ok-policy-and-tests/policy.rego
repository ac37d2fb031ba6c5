package paver.corpus

deny contains {"id": "replicas", "msg": msg} if {
	r := input.request.spec.parameters.replicas
	r > 10
	msg := sprintf("%d replicas", [r])
}
