package corpus

level := "high" if {
	input.score > 8
} else := "low" if {
	y < 3
}
