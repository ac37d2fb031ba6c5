package corpus

deny contains "a" if input.a

deny contains "b" if input.b

deny contains msg if {
	some m in input.extra
	msg := m
}
