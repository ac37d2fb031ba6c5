package corpus

f(x) := y if {
	x := 2
	y := x
}
