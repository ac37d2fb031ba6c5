package corpus

ok if {
	x > 1
	x := input.count
}
