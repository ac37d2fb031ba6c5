package corpus

xs := [1 |
	some item in input.items
	unused := item.name
]
