package corpus

inc(x) := x + 1

v := inc(1, 2)
