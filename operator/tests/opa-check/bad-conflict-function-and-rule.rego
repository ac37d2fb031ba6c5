package corpus

g := 1

g(x) := x
