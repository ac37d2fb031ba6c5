# Security guardrails for every request.
#
# Reads:
#   input.request.spec.route, input.request.spec.environment
#   input.request.metadata.labels["paver.dev/data-classification"]
#   input.parameters.security.{dataClassification, encryptionAtRest, iamPolicies[].actions}
#   input.parameters.database.encrypted, input.parameters.cache.encrypted
#   input.parameters.storage.buckets[].{name, encrypted}
#   input.parameters.networking.ingress.{enabled, public, tls, waf}
#   input.parameters.repository.visibility
package paver.security

import rego.v1

params := object.get(input, "parameters", {})

security := object.get(params, "security", {})

# PCI scope: declared in the parameters, labelled on the request, or implied by the route.
pci if lower(object.get(security, "dataClassification", "")) == "pci"

# Compared lowercased, as the compliance bundle does: a label `PCI` is PCI scope.
pci if lower(input.request.metadata.labels["paver.dev/data-classification"]) == "pci"

pci if input.request.spec.route == "pci-payment-service"

default database_rule := "encryption-at-rest"

database_rule := "pci-encrypted-database" if pci

deny contains {
	"id": "encryption-at-rest",
	"msg": "encryption at rest must not be disabled: remove parameters.security.encryptionAtRest: false",
	"severity": "high",
	"path": "parameters.security.encryptionAtRest",
} if {
	security.encryptionAtRest == false
}

deny contains {
	"id": database_rule,
	"msg": "the database must be encrypted at rest: set parameters.database.encrypted: true",
	"severity": "high",
	"path": "parameters.database.encrypted",
} if {
	db := params.database
	not db.encrypted == true
}

deny contains {
	"id": "encryption-at-rest",
	"msg": "the cache must be encrypted at rest: set parameters.cache.encrypted: true",
	"severity": "high",
	"path": "parameters.cache.encrypted",
} if {
	cache := params.cache
	not cache.encrypted == true
}

deny contains v if {
	some i, bucket in params.storage.buckets
	not bucket.encrypted == true
	v := {
		"id": "encryption-at-rest",
		"msg": sprintf("bucket %v must be encrypted at rest: set encrypted: true", [object.get(bucket, "name", i)]),
		"severity": "high",
		"path": sprintf("parameters.storage.buckets[%d].encrypted", [i]),
	}
}

public_ingress := ingress if {
	ingress := params.networking.ingress
	ingress.public == true
	not ingress.enabled == false
}

deny contains {
	"id": "public-endpoint-tls",
	"msg": "a public endpoint must terminate TLS: set parameters.networking.ingress.tls: true",
	"severity": "high",
	"path": "parameters.networking.ingress.tls",
} if {
	ingress := public_ingress
	not ingress.tls == true
}

deny contains {
	"id": "public-endpoint-waf",
	"msg": "a public endpoint must sit behind the WAF: set parameters.networking.ingress.waf: true",
	"severity": "high",
	"path": "parameters.networking.ingress.waf",
} if {
	ingress := public_ingress
	not ingress.waf == true
}

admin_actions := {"*", "*:*", "iam:*"}

admin_action(action) if lower(action) in admin_actions

deny contains v if {
	some i, policy in security.iamPolicies
	some action in policy.actions
	admin_action(action)
	v := {
		"id": "no-admin-iam",
		"msg": sprintf("IAM policy %v grants administrator action %q: list the actions the service needs", [object.get(policy, "name", i), action]),
		"severity": "critical",
		"path": sprintf("parameters.security.iamPolicies[%d].actions", [i]),
	}
}

deny contains {
	"id": "pci-private-repository",
	"msg": "a PCI-scoped service needs a private repository: set parameters.repository.visibility: private",
	"severity": "high",
	"path": "parameters.repository.visibility",
} if {
	pci
	not params.repository.visibility == "private"
}

deny contains {
	"id": "pci-encryption-at-rest",
	"msg": "a PCI-scoped service must declare encryption at rest: set parameters.security.encryptionAtRest: true",
	"severity": "high",
	"path": "parameters.security.encryptionAtRest",
} if {
	pci
	not security.encryptionAtRest == true
}

warn contains v if {
	some i, policy in security.iamPolicies
	some action in policy.actions
	endswith(action, ":*")
	not admin_action(action)
	v := {
		"id": "wildcard-iam-action",
		"msg": sprintf("IAM policy %v grants every action of a service (%q): prefer the specific actions", [object.get(policy, "name", i), action]),
		"path": sprintf("parameters.security.iamPolicies[%d].actions", [i]),
	}
}

warn contains {
	"id": "data-classification",
	"msg": "set parameters.security.dataClassification (public, internal, confidential, pci or phi) so the right controls apply",
	"path": "parameters.security.dataClassification",
} if {
	not security.dataClassification
}

needs_approval contains "a PCI-scoped service going to production needs a security review" if {
	pci
	input.request.spec.environment == "production"
}
