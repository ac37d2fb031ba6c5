package corpus

monthly := total if {
	hours := 730
	total := (input.cpu * 0.03 + input.memory * 0.004) * hours
}
