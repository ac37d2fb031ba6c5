package corpus

small := xs if {
	xs := [x | some x in input.sizes; x < limit]
	limit := 3
}
