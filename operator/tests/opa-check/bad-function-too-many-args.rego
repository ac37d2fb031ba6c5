package corpus

inc(x) := x + 1

two if inc(1, 2, 3) == 2
