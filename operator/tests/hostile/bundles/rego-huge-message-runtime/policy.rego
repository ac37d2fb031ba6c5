package paver.hostile

deny contains msg if {
	input.parameters.loud
	msg := concat("", [s | some _ in numbers.range(1, 100000); s := "0123456789abcdefghij"])
}
