package corpus

tier := object.get(input.request.spec.parameters, "tier", "standard")
