package paver.reliability_test

import data.paver.reliability
import rego.v1

ids(findings) := {f.id | some f in findings}

base := {
	"request": {"spec": {"route": "microservice", "environment": "production"}},
	"parameters": {
		"compute": {"replicas": 3, "autoscaling": {"enabled": true, "minReplicas": 3}},
		"networking": {"dependencies": [{"name": "inventory", "timeoutMs": 1000, "retries": 3, "circuitBreaker": true}]},
	},
}

with_params(extra) := object.union(base, {"parameters": extra})

test_compliant_base_has_no_findings if {
	count(reliability.deny) == 0 with input as base
	count(reliability.warn) == 0 with input as base
}

test_probes_disabled if {
	"probes-required" in ids(reliability.deny) with input as with_params({"compute": {"probes": {"enabled": false}}})
}

test_liveness_disabled if {
	"probes-required" in ids(reliability.deny) with input as with_params({"compute": {"probes": {"liveness": false}}})
}

test_probes_may_be_disabled_in_development if {
	inp := object.union(with_params({"compute": {"probes": {"enabled": false}}}), {"request": {"spec": {"environment": "development"}}})
	count(reliability.deny) == 0 with input as inp
}

test_one_replica_in_production if {
	"min-replicas" in ids(reliability.deny) with input as with_params({"compute": {"replicas": 1}})
}

test_autoscaling_min_one_in_production if {
	"min-replicas" in ids(reliability.deny) with input as with_params({"compute": {"autoscaling": {"minReplicas": 1}}})
}

test_one_replica_in_staging_is_fine if {
	inp := object.union(with_params({"compute": {"replicas": 1}}), {"request": {"spec": {"environment": "staging"}}})
	count(reliability.deny) == 0 with input as inp
}

test_batch_jobs_have_no_replica_rule if {
	inp := object.union(with_params({"compute": {"replicas": 1}}), {"request": {"spec": {"route": "batch-job"}}})
	count(reliability.deny) == 0 with input as inp
}

test_no_pdb_and_no_autoscaling if {
	inp := with_params({"compute": {"autoscaling": {"enabled": false}, "podDisruptionBudget": {"enabled": false}}})
	"disruption-budget" in ids(reliability.deny) with input as inp
}

test_no_autoscaling_only_warns if {
	inp := with_params({"compute": {"autoscaling": {"enabled": false}}})
	count(reliability.deny) == 0 with input as inp
	"autoscaling" in ids(reliability.warn) with input as inp
}

test_dependency_without_circuit_breaker if {
	inp := with_params({"networking": {"dependencies": [{"name": "inventory", "timeoutMs": 1000, "retries": 3}]}})
	findings := reliability.deny with input as inp
	some f in findings
	f.path == "parameters.networking.dependencies[0].circuitBreaker"
}

test_dependency_without_timeout_or_retries if {
	inp := with_params({"networking": {"dependencies": [{"name": "x", "circuitBreaker": true}]}})
	findings := reliability.deny with input as inp
	count(findings) == 2
}

test_dependency_gaps_only_warn_in_development if {
	inp := object.union(
		with_params({"networking": {"dependencies": [{"name": "x"}]}}),
		{"request": {"spec": {"environment": "development"}}},
	)
	count(reliability.deny) == 0 with input as inp
	"dependency-resilience" in ids(reliability.warn) with input as inp
}

test_long_timeout_warns if {
	inp := with_params({"networking": {"dependencies": [{"name": "x", "timeoutMs": 60000, "retries": 0, "circuitBreaker": true}]}})
	count(reliability.deny) == 0 with input as inp
	"dependency-timeout-long" in ids(reliability.warn) with input as inp
}
