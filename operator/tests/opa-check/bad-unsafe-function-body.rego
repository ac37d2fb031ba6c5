package corpus

f(x) := y if {
	z > x
	y := 1
}
