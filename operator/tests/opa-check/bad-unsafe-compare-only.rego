package corpus

deny contains "x" if {
	x == 1
}
