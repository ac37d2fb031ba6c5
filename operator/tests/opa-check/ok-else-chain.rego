package corpus

tier := "gold" if {
	input.spend > 1000
} else := "silver" if {
	input.spend > 100
} else := "bronze"
