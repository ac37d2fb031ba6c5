package corpus

f(x) := 1

v := f(2)
