package corpus

f(x) := g(x)

g(x) := f(x)

v := f(1)
