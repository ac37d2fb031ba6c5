package lib.naming

valid(name) if regex.match(`^[a-z][a-z0-9-]*$`, name)
