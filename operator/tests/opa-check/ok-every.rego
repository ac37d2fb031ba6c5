package corpus

all_positive if {
	every x in input.values {
		x > 0
	}
}
