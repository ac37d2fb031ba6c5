package corpus

double(x) := y if {
	y := x * 2
}

four if {
	double(2, y)
	y == 4
}
