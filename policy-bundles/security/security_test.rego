package paver.security_test

import data.paver.security
import rego.v1

ids(findings) := {f.id | some f in findings}

base := {
	"request": {
		"metadata": {"name": "svc", "namespace": "team"},
		"spec": {"route": "microservice", "environment": "staging"},
	},
	"parameters": {
		"repository": {"visibility": "internal"},
		"security": {"dataClassification": "internal", "encryptionAtRest": true},
	},
}

with_params(extra) := object.union(base, {"parameters": extra})

pci_base := object.union(base, {
	"request": {"spec": {"route": "pci-payment-service", "environment": "production"}},
	"parameters": {
		"repository": {"visibility": "private"},
		"security": {"dataClassification": "pci", "encryptionAtRest": true},
		"database": {"encrypted": true},
	},
})

test_compliant_base_has_no_findings if {
	count(security.deny) == 0 with input as base
	count(security.warn) == 0 with input as base
	count(security.needs_approval) == 0 with input as base
}

test_encryption_at_rest_disabled if {
	"encryption-at-rest" in ids(security.deny) with input as with_params({"security": {"encryptionAtRest": false}})
}

test_unencrypted_database if {
	"encryption-at-rest" in ids(security.deny) with input as with_params({"database": {"engine": "postgres"}})
}

test_encrypted_database_passes if {
	count(security.deny) == 0 with input as with_params({"database": {"encrypted": true}})
}

test_unencrypted_cache if {
	"encryption-at-rest" in ids(security.deny) with input as with_params({"cache": {"encrypted": false}})
}

test_unencrypted_bucket if {
	findings := security.deny with input as with_params({"storage": {"buckets": [{"name": "b", "encrypted": true}, {"name": "raw"}]}})
	some f in findings
	f.path == "parameters.storage.buckets[1].encrypted"
}

test_public_endpoint_without_tls if {
	"public-endpoint-tls" in ids(security.deny) with input as with_params({"networking": {"ingress": {"public": true, "waf": true}}})
}

test_public_endpoint_without_waf if {
	"public-endpoint-waf" in ids(security.deny) with input as with_params({"networking": {"ingress": {"public": true, "tls": true, "waf": false}}})
}

test_private_endpoint_needs_neither if {
	count(security.deny) == 0 with input as with_params({"networking": {"ingress": {"public": false}}})
}

test_disabled_public_ingress_is_not_an_endpoint if {
	count(security.deny) == 0 with input as with_params({"networking": {"ingress": {"enabled": false, "public": true}}})
}

test_admin_iam_star if {
	"no-admin-iam" in ids(security.deny) with input as with_params({"security": {"iamPolicies": [{"name": "p", "actions": ["*"]}]}})
}

test_admin_iam_iam_star if {
	"no-admin-iam" in ids(security.deny) with input as with_params({"security": {"iamPolicies": [{"name": "p", "actions": ["s3:GetObject", "IAM:*"]}]}})
}

test_service_wildcard_only_warns if {
	count(security.deny) == 0 with input as with_params({"security": {"iamPolicies": [{"name": "p", "actions": ["s3:*"]}]}})
	"wildcard-iam-action" in ids(security.warn) with input as with_params({"security": {"iamPolicies": [{"name": "p", "actions": ["s3:*"]}]}})
}

test_pci_compliant_needs_security_review if {
	count(security.deny) == 0 with input as pci_base
	count(security.needs_approval) == 1 with input as pci_base
}

test_pci_outside_production_needs_no_review if {
	inp := object.union(pci_base, {"request": {"spec": {"environment": "staging"}}})
	count(security.needs_approval) == 0 with input as inp
}

test_pci_requires_private_repository if {
	inp := object.union(pci_base, {"parameters": {"repository": {"visibility": "internal"}}})
	"pci-private-repository" in ids(security.deny) with input as inp
}

test_pci_requires_encrypted_database if {
	inp := object.union(pci_base, {"parameters": {"database": {"encrypted": false}}})
	"pci-encrypted-database" in ids(security.deny) with input as inp
}

test_pci_requires_declared_encryption if {
	inp := object.union(pci_base, {"parameters": {"security": {"encryptionAtRest": null}}})
	"pci-encryption-at-rest" in ids(security.deny) with input as inp
}

test_pci_by_label if {
	inp := object.union(base, {"request": {"metadata": {"labels": {"paver.dev/data-classification": "pci"}}}})
	"pci-private-repository" in ids(security.deny) with input as inp
}

test_missing_classification_warns if {
	inp := {"request": base.request, "parameters": {"security": {"encryptionAtRest": true}}}
	"data-classification" in ids(security.warn) with input as inp
}

# The data-classification label is read case-insensitively (as the
# compliance bundle reads it): `PCI` does not skip the PCI rules.
test_pci_label_in_any_case_is_pci_scope if {
	labelled := object.union(base, {"request": {"metadata": {"labels": {"paver.dev/data-classification": "PCI"}}}})
	security.pci with input as labelled
	"pci-private-repository" in ids(security.deny) with input as labelled
}
