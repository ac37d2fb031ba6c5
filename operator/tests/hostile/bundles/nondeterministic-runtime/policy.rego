package paver.hostile

deny contains sprintf("%v", [opa.runtime().env]) if input.parameters.debug
