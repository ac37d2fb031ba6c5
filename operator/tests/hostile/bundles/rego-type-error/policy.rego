package paver.hostile

deny contains "x" if count(1) > 0
