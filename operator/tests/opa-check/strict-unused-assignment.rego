package corpus

ok if {
	x := input.x
	input.y
}
