package corpus

ok if {
	every x in input.items {
		true
	}
}
