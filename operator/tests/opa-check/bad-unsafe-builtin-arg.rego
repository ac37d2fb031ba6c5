package corpus

many if count(xs) > 1
