package corpus

ok if {
	some x in x
}
