package paver.hostile

# @@BIG@@
deny contains "x" if input.never
