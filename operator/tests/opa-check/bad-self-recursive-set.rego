package corpus

reach contains x if {
	some y in reach
	x := y
}
