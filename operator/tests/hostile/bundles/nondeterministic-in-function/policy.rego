package paver.hostile

now := t if t := time.now_ns()

deny contains "late" if now > 0
