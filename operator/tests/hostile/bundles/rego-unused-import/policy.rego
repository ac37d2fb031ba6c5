package paver.hostile

import data.paver.other

deny contains "x" if input.never
