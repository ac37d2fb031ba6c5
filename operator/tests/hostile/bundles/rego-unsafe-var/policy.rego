package paver.hostile

deny contains msg if {
	x > 1
	msg := sprintf("%v", [x])
}
