package paver.hostile

deny contains n if {
	some i in numbers.range(1, 3000)
	some j in numbers.range(1, 3000)
	n := i * j
	n < 0
}
