package paver.hostile

deny contains "always" if input.parameters.deny == true

