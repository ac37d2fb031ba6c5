package corpus

limits := {"cpu": "1"}

limits.memory := "1Gi"
