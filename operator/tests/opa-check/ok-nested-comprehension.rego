package corpus

matrix := [[y | some y in row] | some row in input.rows]
