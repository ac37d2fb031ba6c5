package corpus

by_name := {name: item |
	some item in input.items
	name := item.name
}
