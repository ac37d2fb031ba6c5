package corpus

deny := []

deny contains "x" if input.x
