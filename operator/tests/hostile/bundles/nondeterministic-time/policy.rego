package paver.hostile

deny contains "outside office hours" if {
	hour := time.clock([time.now_ns(), "UTC"])[0]
	hour > 18
}
