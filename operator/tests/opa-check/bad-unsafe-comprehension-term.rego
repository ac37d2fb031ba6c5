package corpus

names := [n | some item in input.items]
