package corpus

exempt if input.request.metadata.labels["paver.dev/exempt"] == "true"

deny contains "not exempt" if not exempt
