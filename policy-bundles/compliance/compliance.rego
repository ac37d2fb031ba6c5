# Compliance guardrails on the service's source repository.
#
# Reads:
#   input.request.spec.environment
#   input.request.metadata.labels["paver.dev/data-classification"]
#   input.parameters.security.dataClassification
#   input.parameters.repository.{branchProtection, requiredChecks, signedCommits, codeowners}
package paver.compliance

import rego.v1

regulated_classes := {"pci", "phi"}

params := object.get(input, "parameters", {})

repository := object.get(params, "repository", {})

production if input.request.spec.environment == "production"

classification := lower(params.security.dataClassification)

classification := lower(input.request.metadata.labels["paver.dev/data-classification"]) if {
	not params.security.dataClassification
}

regulated if classification in regulated_classes

deny contains {
	"id": "branch-protection",
	"msg": "production code needs a protected default branch: set parameters.repository.branchProtection: true",
	"severity": "high",
	"path": "parameters.repository.branchProtection",
} if {
	production
	not repository.branchProtection == true
}

deny contains {
	"id": "required-checks",
	"msg": "production code needs required status checks: list them in parameters.repository.requiredChecks",
	"severity": "high",
	"path": "parameters.repository.requiredChecks",
} if {
	production
	not has_required_checks
}

has_required_checks if count(repository.requiredChecks) > 0

deny contains {
	"id": "signed-commits",
	"msg": sprintf("%s data needs signed commits: set parameters.repository.signedCommits: true", [upper(classification)]),
	"severity": "high",
	"path": "parameters.repository.signedCommits",
} if {
	regulated
	not repository.signedCommits == true
}

warn contains {
	"id": "codeowners",
	"msg": "regulated services should name code owners: set parameters.repository.codeowners",
	"path": "parameters.repository.codeowners",
} if {
	regulated
	not count(object.get(repository, "codeowners", [])) > 0
}
