package corpus

ok if {
	input := {"x": 1}
	input.x == 1
}
