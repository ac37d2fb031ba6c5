# Reliability guardrails.
#
# Reads:
#   input.request.spec.{route, environment}
#   input.parameters.compute.{replicas, probes.{enabled, liveness, readiness},
#                             autoscaling.{enabled, minReplicas}, podDisruptionBudget.enabled}
#   input.parameters.networking.dependencies[].{name, timeoutMs, retries, circuitBreaker}
#
# The routes render probes and a PodDisruptionBudget by default, so only
# turning them off is a violation; absent settings take the route defaults.
package paver.reliability

import rego.v1

# Routes whose workloads serve traffic continuously (not jobs or pipelines).
long_running_routes := {"microservice", "web-frontend", "pci-payment-service"}

spec := object.get(object.get(input, "request", {}), "spec", {})

compute := object.get(object.get(input, "parameters", {}), "compute", {})

long_running if spec.route in long_running_routes

production if spec.environment == "production"

probe_disabled contains "probes" if compute.probes.enabled == false

probe_disabled contains kind if {
	some kind in ["liveness", "readiness"]
	compute.probes[kind] == false
}

deny contains v if {
	long_running
	spec.environment != "development"
	some what in probe_disabled
	v := {
		"id": "probes-required",
		"msg": sprintf("%s must stay enabled outside development: Kubernetes needs them to route traffic and restart a stuck service", [what]),
		"severity": "high",
		"path": "parameters.compute.probes",
	}
}

deny contains {
	"id": "min-replicas",
	"msg": sprintf("production needs at least 2 replicas, got %v: set parameters.compute.replicas", [compute.replicas]),
	"severity": "high",
	"path": "parameters.compute.replicas",
} if {
	long_running
	production
	compute.replicas < 2
}

deny contains {
	"id": "min-replicas",
	"msg": sprintf("production autoscaling needs minReplicas of at least 2, got %v", [compute.autoscaling.minReplicas]),
	"severity": "high",
	"path": "parameters.compute.autoscaling.minReplicas",
} if {
	long_running
	production
	compute.autoscaling.minReplicas < 2
}

autoscaling if compute.autoscaling.enabled == true

deny contains {
	"id": "disruption-budget",
	"msg": "production needs a PodDisruptionBudget or autoscaling: remove parameters.compute.podDisruptionBudget.enabled: false or enable autoscaling",
	"severity": "high",
	"path": "parameters.compute.podDisruptionBudget.enabled",
} if {
	long_running
	production
	not autoscaling
	compute.podDisruptionBudget.enabled == false
}

warn contains {
	"id": "autoscaling",
	"msg": "consider parameters.compute.autoscaling for production load peaks",
	"path": "parameters.compute.autoscaling",
} if {
	long_running
	production
	not autoscaling
}

# What each dependency of the service lacks.
dependency_problems contains [i, name, problem] if {
	some i, dep in input.parameters.networking.dependencies
	name := object.get(dep, "name", sprintf("#%d", [i]))
	some problem in dependency_gaps(dep)
}

dependency_gaps(dep) := {gap |
	some gap in ["timeoutMs", "retries", "circuitBreaker"]
	not dependency_setting_ok(dep, gap)
}

dependency_setting_ok(dep, "timeoutMs") if dep.timeoutMs > 0

dependency_setting_ok(dep, "retries") if dep.retries >= 0

dependency_setting_ok(dep, "circuitBreaker") if dep.circuitBreaker == true

dependency_finding(i, name, problem) := {
	"id": "dependency-resilience",
	"msg": sprintf("dependency %s needs %s (timeoutMs > 0, retries >= 0, circuitBreaker: true)", [name, problem]),
	"severity": "medium",
	"path": sprintf("parameters.networking.dependencies[%d].%s", [i, problem]),
}

deny contains dependency_finding(i, name, problem) if {
	spec.environment != "development"
	some [i, name, problem] in dependency_problems
}

warn contains dependency_finding(i, name, problem) if {
	spec.environment == "development"
	some [i, name, problem] in dependency_problems
}

warn contains v if {
	some i, dep in input.parameters.networking.dependencies
	dep.timeoutMs > 30000
	v := {
		"id": "dependency-timeout-long",
		"msg": sprintf("dependency %v waits up to %vms: long timeouts tie up workers when it is slow", [object.get(dep, "name", i), dep.timeoutMs]),
		"path": sprintf("parameters.networking.dependencies[%d].timeoutMs", [i]),
	}
}
