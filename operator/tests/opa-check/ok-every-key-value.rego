package corpus

labelled if {
	every k, v in input.request.metadata.labels {
		startswith(k, "paver.dev/")
		v != ""
	}
}
