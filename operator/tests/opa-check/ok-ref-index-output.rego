package corpus

names contains name if {
	input.items[i].enabled == true
	name := input.items[i].name
}
