package corpus

a if b

b if a
