package corpus

pair if {
	[a, b] = input.pair
	a == b
}
