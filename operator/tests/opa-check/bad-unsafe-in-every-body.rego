package corpus

ok if {
	every x in input.values {
		x > threshold
	}
}
