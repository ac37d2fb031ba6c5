package corpus

ok if {
	some i
	input.items[_].ok
}
