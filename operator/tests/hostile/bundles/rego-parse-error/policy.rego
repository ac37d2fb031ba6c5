package paver.hostile

deny contains msg if {
	msg :=
}
