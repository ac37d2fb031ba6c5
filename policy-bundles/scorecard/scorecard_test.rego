package paver.scorecard_test

import data.paver.scorecard
import rego.v1

checks_for(inp) := cs if {
	cs := scorecard.checks with input as inp
}

results(inp) := {c.id: c.pass | some c in checks_for(inp)}

passed(inp) := {id | some id, pass in results(inp); pass}

failed(inp) := {id | some id, pass in results(inp); not pass}

full := {
	"request": {"spec": {"route": "microservice", "team": "t", "owner": "o@example.com", "costCenter": "CC-1000"}},
	"parameters": {
		"compute": {"cpu": 1, "memoryGi": 2, "replicas": 3, "autoscaling": {"enabled": true, "minReplicas": 3}},
		"observability": {"slo": {"availability": 99.9}, "alertsChannel": "#team"},
		"repository": {"signedCommits": true},
	},
	"estimate": {"monthly": 100},
	"rendered": {
		"deployment.yaml": "kind: Deployment\n  livenessProbe: {}\n  readinessProbe: {}\n",
		"networkpolicy.yaml": "kind: NetworkPolicy\n",
	},
	"git": {"last_commit_by_owner_days": 3},
	"cluster": {"sync": "Synced", "health": "Healthy"},
}

test_every_check_is_always_reported if {
	count(results({})) == 14
	count(results(full)) == 14
}

test_everything_passes_when_everything_is_there if {
	failed(full) == set()
}

test_empty_input_fails_what_needs_evidence if {
	f := failed({"request": {"spec": {"route": "microservice"}}})
	{"owner-set", "cost-center", "probes", "network-policy", "active-owner", "synced-healthy"} - f == set()
}

test_stale_owner if {
	"active-owner" in failed(object.union(full, {"git": {"last_commit_by_owner_days": 400}}))
}

test_out_of_sync if {
	"synced-healthy" in failed(object.union(full, {"cluster": {"sync": "OutOfSync"}}))
}

test_unencrypted_bucket if {
	"encryption-at-rest" in failed(object.union(full, {"parameters": {"storage": {"buckets": [{"encrypted": false}]}}}))
}

test_jobs_need_no_probes_or_replicas if {
	inp := object.union(json.remove(full, ["rendered", "parameters/compute/replicas", "parameters/compute/autoscaling"]), {"request": {"spec": {"route": "batch-job"}}})
	{"probes", "redundancy", "autoscaling"} & failed(inp) == set()
}
