package corpus

ok if {
	input.x := 1
}
