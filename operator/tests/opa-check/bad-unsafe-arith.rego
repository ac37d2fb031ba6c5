package corpus

bigger := y if {
	y := x + 1
}
