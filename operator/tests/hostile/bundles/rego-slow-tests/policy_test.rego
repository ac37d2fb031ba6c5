package paver.hostile_test

import data.paver.hostile

slow := n if {
	count(hostile.deny) == 0
	n := count([i | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i * j < 0])
}

test_slow_0 if slow == 0

test_slow_1 if slow == 0

test_slow_2 if slow == 0

test_slow_3 if slow == 0

test_slow_4 if slow == 0

test_slow_5 if slow == 0

test_slow_6 if slow == 0

test_slow_7 if slow == 0

test_slow_8 if slow == 0

test_slow_9 if slow == 0

test_slow_10 if slow == 0

test_slow_11 if slow == 0
