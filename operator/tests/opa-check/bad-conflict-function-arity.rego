package corpus

f(x) := x

f(x, y) := x + y

v := f(1)
