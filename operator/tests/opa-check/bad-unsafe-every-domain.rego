package corpus

all_ok if {
	every x in xs {
		x > 0
	}
}
