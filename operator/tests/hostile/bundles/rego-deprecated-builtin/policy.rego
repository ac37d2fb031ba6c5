package paver.hostile

deny contains "x" if any([input.never])
