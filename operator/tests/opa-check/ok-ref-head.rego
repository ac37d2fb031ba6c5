package corpus

limits.cpu := "500m"

limits.memory := "1Gi" if input.large
