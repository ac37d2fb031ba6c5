package corpus

same if {
	input.a = x
	x == input.b
}
