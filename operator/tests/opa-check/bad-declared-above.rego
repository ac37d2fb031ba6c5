package corpus

ok if {
	some i
	some i
	input.items[i]
}
