package corpus

ok if {
	lower(input.a, input.b, x)
	x == "a"
}
