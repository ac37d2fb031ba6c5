package paver.hostile

deny contains "too many" if {
	count(numbers.range(1, 1000000000)) > 0
}
