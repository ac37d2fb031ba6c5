package corpus

deny contains "x" if input.x
