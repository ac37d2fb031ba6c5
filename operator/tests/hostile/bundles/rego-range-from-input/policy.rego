package paver.hostile

deny contains "too many" if {
	count(numbers.range(1, input.parameters.n)) > 5
}
