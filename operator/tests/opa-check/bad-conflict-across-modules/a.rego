package corpus

deny := []
