package paver.hostile

deny contains sprintf("finding %d", [i]) if {
	input.parameters.loud
	some i in numbers.range(1, 20000)
}
