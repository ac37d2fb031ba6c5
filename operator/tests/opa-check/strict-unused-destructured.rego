package corpus

first := a if {
	[a, b] := input.pair
}
