package corpus

default allow := false

allow if input.user == "admin"

default size(_) := 0

size(x) := count(x) if is_array(x)
