package paver.hostile

deny contains "deep" if {
	x := @@OPEN@@1@@CLOSE@@
	x == 0
}
