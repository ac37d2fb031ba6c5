package paver.hostile

deny contains "unlucky" if rand.intn("paver", 2) == 0
