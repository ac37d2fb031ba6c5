package corpus

always(_) := true

yes := always(1)
