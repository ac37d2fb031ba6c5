package corpus

many if {
	count(input.tags, n)
	n > 3
}
