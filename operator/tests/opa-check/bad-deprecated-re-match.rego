package corpus

ok if re_match("^a", input.name)
