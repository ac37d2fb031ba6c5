package corpus

labels[k] := v if {
	some k, v in input.request.metadata.labels
	not startswith(k, "internal.")
}
