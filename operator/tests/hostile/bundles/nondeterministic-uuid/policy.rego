package paver.hostile

deny contains sprintf("ticket %s", [uuid.rfc4122("x")]) if input.parameters.ticket
