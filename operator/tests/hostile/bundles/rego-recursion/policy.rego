package paver.hostile

a if b

b if a

deny contains "x" if a
