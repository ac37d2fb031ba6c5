package corpus

keys contains k if {
	some k, _ in input.request.metadata.annotations
}
