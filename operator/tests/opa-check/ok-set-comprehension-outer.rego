package corpus

prefixed contains p if {
	prefix := input.prefix
	some p in {t | some t in input.tags; startswith(t, prefix)}
}
