package corpus

pick(a, b) := a

v := pick(1, 2)
