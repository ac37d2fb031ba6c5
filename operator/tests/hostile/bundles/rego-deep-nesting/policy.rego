package paver.hostile

deep := [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]

deny contains "deep" if count(deep) == 0
