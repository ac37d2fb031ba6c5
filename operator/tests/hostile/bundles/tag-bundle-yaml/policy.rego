package paver.hostile

deny contains "x" if input.never
