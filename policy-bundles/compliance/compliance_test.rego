package paver.compliance_test

import data.paver.compliance
import rego.v1

ids(findings) := {f.id | some f in findings}

base := {
	"request": {"spec": {"environment": "production"}},
	"parameters": {
		"repository": {"branchProtection": true, "requiredChecks": ["build"]},
		"security": {"dataClassification": "internal"},
	},
}

regulated(class) := object.union(base, {"parameters": {
	"security": {"dataClassification": class},
	"repository": {"signedCommits": true, "codeowners": ["@example/team"]},
}})

test_compliant_base_has_no_findings if {
	count(compliance.deny) == 0 with input as base
	count(compliance.warn) == 0 with input as base
}

test_branch_protection_required_in_production if {
	inp := object.union(base, {"parameters": {"repository": {"branchProtection": false}}})
	"branch-protection" in ids(compliance.deny) with input as inp
}

test_required_checks_in_production if {
	inp := object.union(base, {"parameters": {"repository": {"requiredChecks": []}}})
	"required-checks" in ids(compliance.deny) with input as inp
}

test_staging_needs_neither if {
	inp := {"request": {"spec": {"environment": "staging"}}, "parameters": {"repository": {}}}
	count(compliance.deny) == 0 with input as inp
}

test_pci_needs_signed_commits if {
	inp := object.union(regulated("pci"), {"parameters": {"repository": {"signedCommits": false}}})
	"signed-commits" in ids(compliance.deny) with input as inp
}

test_phi_needs_signed_commits if {
	inp := object.union(regulated("PHI"), {"parameters": {"repository": {"signedCommits": false}}})
	"signed-commits" in ids(compliance.deny) with input as inp
}

test_regulated_by_label if {
	inp := {
		"request": {"spec": {"environment": "staging"}, "metadata": {"labels": {"paver.dev/data-classification": "pci"}}},
		"parameters": {"repository": {}},
	}
	"signed-commits" in ids(compliance.deny) with input as inp
}

test_regulated_compliant if {
	count(compliance.deny) == 0 with input as regulated("pci")
	count(compliance.warn) == 0 with input as regulated("pci")
}

test_regulated_without_codeowners_warns if {
	inp := json.remove(regulated("pci"), ["parameters/repository/codeowners"])
	"codeowners" in ids(compliance.warn) with input as inp
}
