package corpus

paths contains path if {
	walk(input, [path, value])
	value == "secret"
}
