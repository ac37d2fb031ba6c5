package paver.hostile

deny contains "x" if input.never

deny := {"y"} if input.also_never
