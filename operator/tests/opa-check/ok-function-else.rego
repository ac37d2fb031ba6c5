package corpus

clamp(x) := 10 if {
	x > 10
} else := x
