package paver.hostile

deny contains "never" if input.never
