package corpus

ok if {
	a > 1
	b < 2
}
