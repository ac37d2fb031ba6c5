package paver.hostile

deny contains "late" if {
	t := time.now_ns (
		# the call, spelled over three lines
	)
	t > 0
}
