package corpus

ok if {
	not x := input.x
}
