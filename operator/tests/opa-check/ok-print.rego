package corpus

allow if {
	print("checking", input.user)
	input.user != ""
}
