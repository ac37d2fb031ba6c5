package paver.hostile

deny contains "@@BIG@@" if input.parameters.loud
