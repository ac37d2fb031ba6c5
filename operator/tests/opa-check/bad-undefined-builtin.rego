package corpus

up := strings.to_upper_case(input.name)
