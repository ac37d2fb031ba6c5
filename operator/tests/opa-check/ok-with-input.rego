package corpus

allow if input.user == "alice"

test_allow if {
	allow with input as {"user": "alice"}
}
