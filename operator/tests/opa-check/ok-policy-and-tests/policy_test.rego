package paver.corpus_test

import data.paver.corpus

test_many_replicas_denied if {
	count(corpus.deny) == 1 with input as {"request": {"spec": {"parameters": {"replicas": 11}}}}
}

test_few_replicas_allowed if {
	count(corpus.deny) == 0 with input as {"request": {"spec": {"parameters": {"replicas": 2}}}}
}
