package corpus

data := 1
