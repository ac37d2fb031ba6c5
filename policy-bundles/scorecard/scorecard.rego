# Scorecard checks: production readiness, security, cost, SLO, ownership.
# Every check is always reported, passing or failing, so scores are stable.
#
# Reads:
#   input.request.spec.{route, team, owner, costCenter}
#   input.parameters.compute.{cpu, memoryGi, replicas, autoscaling.{enabled, minReplicas}}
#   input.parameters.security.encryptionAtRest, input.parameters.{database,cache}.encrypted,
#   input.parameters.storage.buckets[].encrypted
#   input.parameters.repository.signedCommits
#   input.parameters.observability.{slo, alertsChannel}
#   input.estimate.monthly
#   input.rendered: path -> content of the rendered files (after render)
#   input.git.last_commit_by_owner_days: days since the owner last committed (after commit)
#   input.cluster.{sync, health}: Argo CD status of the Application (after sync)
package paver.scorecard

import rego.v1

spec := object.get(object.get(input, "request", {}), "spec", {})

params := object.get(input, "parameters", {})

compute := object.get(params, "compute", {})

observability := object.get(params, "observability", {})

rendered := object.get(input, "rendered", {})

long_running if spec.route in {"microservice", "web-frontend", "pci-payment-service"}

check(id, category, level, pass, ok_msg, fail_msg) := {
	"id": id,
	"category": category,
	"level": level,
	"pass": pass,
	"msg": pick(pass, ok_msg, fail_msg),
}

pick(true, ok_msg, _) := ok_msg

pick(false, _, fail_msg) := fail_msg

nonempty(obj, key) if {
	is_string(obj[key])
	trim_space(obj[key]) != ""
}

# --- bronze --------------------------------------------------------------

default owned := false

owned if {
	nonempty(spec, "owner")
	nonempty(spec, "team")
}

checks contains check("owner-set", "ownership", "bronze", owned, "owner and team are set", "set spec.owner and spec.team")

default cost_center := false

cost_center if nonempty(spec, "costCenter")

checks contains check("cost-center", "cost", "bronze", cost_center, "spend is charged to a cost center", "set spec.costCenter")

default resources := false

resources if {
	compute.cpu > 0
	compute.memoryGi > 0
}

checks contains check("resources-set", "production-readiness", "bronze", resources, "CPU and memory are sized", "set parameters.compute.cpu and memoryGi")

encryption_disabled if params.security.encryptionAtRest == false

encryption_disabled if params.database.encrypted == false

encryption_disabled if params.cache.encrypted == false

encryption_disabled if {
	some bucket in params.storage.buckets
	bucket.encrypted == false
}

default encrypted := true

encrypted := false if encryption_disabled

checks contains check("encryption-at-rest", "security", "bronze", encrypted, "data is encrypted at rest", "some storage is not encrypted at rest")

# --- silver --------------------------------------------------------------

default probes := false

probes if not long_running

probes if {
	some content in rendered
	contains(content, "livenessProbe")
	contains(content, "readinessProbe")
}

checks contains check("probes", "production-readiness", "silver", probes, "liveness and readiness probes are rendered", "no rendered workload has liveness and readiness probes")

default network_policy := false

network_policy if {
	some path, _ in rendered
	contains(lower(path), "networkpolicy")
}

network_policy if {
	some content in rendered
	contains(content, "kind: NetworkPolicy")
}

checks contains check("network-policy", "security", "silver", network_policy, "a NetworkPolicy is rendered", "no NetworkPolicy is rendered")

default slo := false

slo if count(observability.slo) > 0

checks contains check("slo-defined", "slo", "silver", slo, "service level objectives are declared", "declare parameters.observability.slo")

default redundant := false

redundant if not long_running

redundant if compute.replicas >= 2

redundant if {
	compute.autoscaling.enabled == true
	compute.autoscaling.minReplicas >= 2
}

checks contains check("redundancy", "production-readiness", "silver", redundant, "runs at least two replicas", "run at least two replicas")

default estimated := false

estimated if is_number(input.estimate.monthly)

checks contains check("cost-estimated", "cost", "silver", estimated, "a monthly cost estimate exists", "no monthly cost estimate")

# --- gold ----------------------------------------------------------------

default active_owner := false

active_owner if input.git.last_commit_by_owner_days <= 90

checks contains check("active-owner", "ownership", "gold", active_owner, "the owner committed in the last 90 days", "the owner has not committed in 90 days (or no history yet)")

default healthy := false

healthy if {
	input.cluster.sync == "Synced"
	input.cluster.health == "Healthy"
}

checks contains check("synced-healthy", "cluster", "gold", healthy, "Argo CD reports Synced and Healthy", "Argo CD does not report Synced and Healthy yet")

default alerts := false

alerts if nonempty(observability, "alertsChannel")

checks contains check("alerts-routed", "slo", "gold", alerts, "alerts go to a channel", "set parameters.observability.alertsChannel")

default signed := false

signed if params.repository.signedCommits == true

checks contains check("signed-commits", "security", "gold", signed, "commits are signed", "set parameters.repository.signedCommits: true")

default autoscaled := false

autoscaled if not long_running

autoscaled if compute.autoscaling.enabled == true

checks contains check("autoscaling", "production-readiness", "gold", autoscaled, "scales with load", "enable parameters.compute.autoscaling")
