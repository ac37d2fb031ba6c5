package corpus

limit := 3

small contains x if {
	some x in [y | some y in input.sizes; y < limit]
}
