package corpus

kind(x) := "number" if is_number(x)

kind(x) := "string" if is_string(x)

answer := kind(1)
