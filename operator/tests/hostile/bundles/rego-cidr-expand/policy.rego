package paver.hostile

deny contains "too many" if {
	count(net.cidr_expand("0.0.0.0/0")) > 0
}
