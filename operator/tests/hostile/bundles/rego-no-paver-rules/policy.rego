package paver.hostile

allow if input.never
