package corpus

deny contains "bad" if not valid_name(input.name)
