package corpus

index := {k: v | v := input.items[_]}
