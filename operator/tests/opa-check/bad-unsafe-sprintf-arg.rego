package corpus

deny contains msg if {
	input.bad
	msg := sprintf("%s", [reason])
}
