package corpus

ok if startswith(input.name)
