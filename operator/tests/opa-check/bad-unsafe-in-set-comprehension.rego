package corpus

tags := {key | input.request.spec.parameters.tags[_] == key}
