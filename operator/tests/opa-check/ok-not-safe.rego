package corpus

deny contains "no team" if {
	team := input.request.spec.team
	not valid_team(team)
}

valid_team(t) if {
	some allowed in ["payments", "search"]
	t == allowed
}
