package corpus

team_of[ns] := team if {
	some ns_obj in input.namespaces
	ns := ns_obj.name
	team := ns_obj.labels["paver.dev/team"]
}
