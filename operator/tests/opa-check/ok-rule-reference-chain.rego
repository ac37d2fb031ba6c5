package corpus

spec := input.request.spec

params := spec.parameters

replicas := params.replicas
