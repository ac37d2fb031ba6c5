package corpus

has_admin if {
	some i
	input.users[i].role == "admin"
}
