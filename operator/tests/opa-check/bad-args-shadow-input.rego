package corpus

f(input) := 1

v := f(2)
